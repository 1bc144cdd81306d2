#!/bin/bash
# Hand MariaDB from systemd to pacemaker on an app node: it stops being
# started at boot, and stops now unless pacemaker already runs it.
# The replicas hand over first; the bootstrap primary then commits one more
# transaction, so its GTID is the highest and pacemaker's first election
# (ocf:heartbeat:mariadb promotes the highest GTID) picks it.
# A node joining a running cluster (a replaced or added one) hands its seeded
# server over the same way, and waits until pacemaker runs it there.
# Pacemaker runs MariaDB only on nodes that carry the node attribute this step
# sets (see cluster-resources.sh), so it never starts or stops a server that is
# still being set up or seeded under systemd.
# Arguments:
#   BOOTSTRAP    yes on the bootstrap primary, else no
#   JOIN_WAIT_S  how long pacemaker has to run MariaDB on a node that joins a running cluster
set -euo pipefail
step_args BOOTSTRAP JOIN_WAIT_S -- "$@"
read_bundle
systemctl disable mariadb.service >/dev/null 2>&1
me=$(crm_node -n)
handed_over() { crm_attribute --node "$me" --name do-ha-db --update handed-over --lifetime forever; }
where() { crm_resource --resource mariadb-clone --locate 2>/dev/null || true; }
runs_here() { grep -q "running on: $me\b" <<<"$(where)"; }
replicating() {
	local status
	grep -q "running on: $me Promoted" <<<"$(where)" && return 0
	status=$(mariadb -e 'SHOW SLAVE STATUS\G' 2>/dev/null) &&
		grep -q 'Slave_IO_Running: Yes' <<<"$status" && grep -q 'Slave_SQL_Running: Yes' <<<"$status"
}

if managed_by_pacemaker mariadb; then
	if systemctl is-active --quiet mariadb.service; then
		log "stopping the server systemd runs; pacemaker takes it over"
		systemctl stop mariadb.service
	fi
	handed_over
	# Room for this node in the clone: an added node hands over before
	# cluster-resources sets the declared count (it runs last).
	nodes_ready=$(cibadmin --query --scope nodes | grep -c 'name="do-ha-db" value="handed-over"' || true)
	clone_max=$(crm_resource --resource mariadb-clone --meta --get-parameter clone-max 2>/dev/null | awk '{ n = $NF } END { print n + 0 }')
	if [ "$nodes_ready" -gt "$clone_max" ]; then
		log "raising the MariaDB clone's size to $nodes_ready"
		quiet crm_resource --resource mariadb-clone --meta --set-parameter clone-max --parameter-value "$nodes_ready"
	fi
	wait_for "pacemaker to run mariadb on $me" "$JOIN_WAIT_S" runs_here
	wait_for "mariadb on $me to replicate" "$JOIN_WAIT_S" replicating
	log "pacemaker runs mariadb"
	exit 0
fi
if [ "$BOOTSTRAP" = yes ]; then
	mariadb <<'SQL'
CREATE TABLE IF NOT EXISTS do_ha_canary.handover (id INT PRIMARY KEY, at TIMESTAMP(6) NOT NULL);
REPLACE INTO do_ha_canary.handover VALUES (1, CURRENT_TIMESTAMP(6));
SQL
fi
systemctl stop mariadb.service
handed_over
log "mariadb is left to pacemaker"
