#!/bin/bash
# Prepare one node for the cluster (every node, witness included).
# Arguments:
#   CLUSTER_NAME      the corosync cluster's name
#   BRICK_FIRST_PORT  first port of the range GlusterFS bricks may listen on
#   BRICK_LAST_PORT   last port of that range (the firewalls open exactly it)
#   MEMBERS           every member as NAME=PRIVATE_IP, space separated
#   VPC_RANGE         the VPC as CIDR (the sync marks' port is open to it only)
#   SYNC_MARKS_PORT   the port of the sync marks' store
# Bundle: secrets HACLUSTER_PASSWORD, DO_API_TOKEN; the
# reserved-IP resource agent, the DigitalOcean fence agent and the MariaDB agent's
# wrapper (/usr/lib/do-ha-stack/mariadb-agent, installed below), the sync marks'
# store and its unit as files; glusterd's
# TLS key, certificate and CA (/etc/ssl/glusterfs.{key,pem,ca}, infra/storage.py).
set -euo pipefail
step_args CLUSTER_NAME BRICK_FIRST_PORT BRICK_LAST_PORT MEMBERS VPC_RANGE SYNC_MARKS_PORT -- "$@"
read -ra specs <<<"$MEMBERS"

read_bundle
[ -n "${SECRET_HACLUSTER_PASSWORD:-}" ] || die "no hacluster password on stdin"
[ -n "${SECRET_DO_API_TOKEN:-}" ] || die "no DigitalOcean API token on stdin"

# The token the agents use: root only, never a CIB parameter.
install -d -m 0700 /etc/do-ha-stack
put_file 0600 root:root /etc/do-ha-stack/do-api-token <<<"$SECRET_DO_API_TOKEN"

# pcsd authenticates peers as hacluster; chpasswd reads the pair from stdin.
printf 'hacluster:%s\n' "$SECRET_HACLUSTER_PASSWORD" | chpasswd

# Debian's corosync package ships a one-node cluster of its own. Remove it, and
# nothing else: a corosync.conf naming our cluster is never touched again.
conf=/etc/corosync/corosync.conf
if [ -f "$conf" ] && ! grep -Eq "^[[:space:]]*cluster_name:[[:space:]]*${CLUSTER_NAME}[[:space:]]*$" "$conf"; then
	log "removing the distribution's default cluster"
	quiet pcs cluster destroy --force
fi

# Peers by name over the VPC, without DNS: glusterd and pacemaker look peers up
# (forward and reverse) and a slow resolver stalls them. cloud-init rewrites
# /etc/hosts at boot from its template, so the block goes into both.
# Each address is its own canonical name (the node's name an alias): glusterd
# records a peer that probed it under the reverse lookup of its address, and a
# peer recorded by node name stays bound to that name, so the droplet that
# replaces the node (same name, new address) could never join the pool.
block() {
	local spec
	echo "# do-ha-stack cluster members (private addresses)"
	for spec in "$@"; do printf '%s %s %s\n' "${spec#*=}" "${spec#*=}" "${spec%%=*}"; done
	echo "# end do-ha-stack"
}
for hosts in /etc/hosts /etc/cloud/templates/hosts.debian.tmpl; do
	[ -f "$hosts" ] || continue
	put_file 0644 root:root "$hosts" < <(
		sed '/^# do-ha-stack cluster members/,/^# end do-ha-stack/d' "$hosts"
		block "${specs[@]}")
done

# Where GlusterFS bricks live (glusterd creates only the last path component).
install -d -m 0700 "$STATE_DIR/bricks"

# Bricks listen only inside the range the firewalls open (infra/ports.py), not
# glusterd's default of anything up to 60999.
vol=/etc/glusterfs/glusterd.vol
put_file 0644 root:root "$vol" < <(
	sed -e '/option[[:space:]]\+\(base\|max\)-port/d' \
		-e "s/^end-volume/    option base-port $BRICK_FIRST_PORT\n    option max-port $BRICK_LAST_PORT\nend-volume/" "$vol")
# GlusterFS speaks TLS only (infra/storage.py). secure-access turns it on for
# glusterd's management connections, the gluster CLI and this node's mounts; the
# volume's I/O follows (storage-volume). A pool cannot mix TLS and plain peers:
# every node takes it in the same run, and a running glusterd restarts for it
# (bricks and mounts keep running; storage-volume and storage-mount move them).
secure=/var/lib/glusterd/secure-access
tls_files=(/etc/ssl/glusterfs.key /etc/ssl/glusterfs.pem /etc/ssl/glusterfs.ca)
for f in "${tls_files[@]}"; do [ -s "$f" ] || die "no $f in the bundle"; done
if [ ! -e "$secure" ]; then
	install -d -m 0755 "${secure%/*}"
	install -m 0644 /dev/null "$secure"
	CHANGED+=("$secure")
fi
restart=no
for f in "$vol" "$secure" "${tls_files[@]}"; do changed "$f" && restart=yes; done
if [ "$restart" = yes ] && systemctl is-active --quiet glusterd.service; then
	log "restarting glusterd for its new settings"
	# Debian's unit allows 6 starts an hour; a deliberate restart is not a crash loop.
	systemctl reset-failed glusterd.service
	systemctl restart glusterd.service
fi

# The packaged MariaDB resource agent, wrapped (cloudinit/agents/mariadb says
# why). dpkg-divert moves apt's copy aside for good, so upgrades of
# resource-agents land there; the copy is made before the diversion and the
# wrapper replaces the original by a rename, so pacemaker always finds an agent.
agent=/usr/lib/ocf/resource.d/heartbeat/mariadb
distrib=/usr/lib/do-ha-stack/ocf-distrib/mariadb
if [ "$(dpkg-divert --truename "$agent")" != "$distrib" ]; then
	[ -x "$agent" ] || die "$agent is missing: is resource-agents installed?"
	log "diverting $agent to $distrib"
	install -d -m 0755 "${distrib%/*}"
	cp -p "$agent" "$distrib.new"
	mv -f "$distrib.new" "$distrib"
	quiet dpkg-divert --local --no-rename --divert "$distrib" --add "$agent"
fi
put_file 0755 root:root "$agent" </usr/lib/do-ha-stack/mariadb-agent

# The sync guard's out-of-sync marks (cloudinit/app/sync-marks): every node keeps
# them, so that a majority does. First boot opens the port on new nodes; nodes from
# before it get the rule here. It answers once this node has corosync's authkey.
quiet ufw allow proto tcp from "$VPC_RANGE" to any port "$SYNC_MARKS_PORT" comment 'cluster'
systemctl daemon-reload
systemctl enable do-ha-sync-marks.service >/dev/null 2>&1
if changed /etc/systemd/system/do-ha-sync-marks.service || changed /usr/local/lib/do-ha-stack/sync-marks ||
	! systemctl is-active --quiet do-ha-sync-marks.service; then
	systemctl restart do-ha-sync-marks.service
fi
wait_for "the sync marks' store" 30 systemctl is-active --quiet do-ha-sync-marks.service

# Every node runs glusterd (enabled here: Debian leaves it off) (app bricks, the witness's arbiter brick) and pcsd.
quiet systemctl enable --now pcsd.service glusterd.service
wait_for "pcsd" 60 systemctl is-active --quiet pcsd.service
wait_for "glusterd" 60 systemctl is-active --quiet glusterd.service
log "ready for cluster $CLUSTER_NAME${CHANGED[*]:+ (updated: ${CHANGED[*]})}"
