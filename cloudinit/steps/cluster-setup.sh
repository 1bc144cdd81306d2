#!/bin/bash
# Form the corosync/pacemaker cluster, or bring an existing one up to the
# program's membership. Runs on the bootstrap node.
# Arguments (values and why: infra/tuning.py):
#   CLUSTER_NAME         the corosync cluster's name
#   MEMBERS              every member as NAME=PRIVATE_IP, space separated
#   TOKEN_MS             corosync token timeout
#   CONSENSUS_MS         corosync consensus timeout
#   JOIN_MS              corosync join timeout
#   START_WAIT_S         how long pcs waits for nodes to start or join
#   STICKINESS           pacemaker's default resource-stickiness
#   MIGRATION_THRESHOLD  failures on a node before a resource moves
#   FAILURE_TIMEOUT      when failures are forgotten
#   NO_QUORUM_POLICY     what a partition without quorum does
# Bundle: secret HACLUSTER_PASSWORD.
set -euo pipefail
step_args CLUSTER_NAME MEMBERS TOKEN_MS CONSENSUS_MS JOIN_MS START_WAIT_S STICKINESS MIGRATION_THRESHOLD \
	FAILURE_TIMEOUT NO_QUORUM_POLICY -- "$@"
read -ra specs <<<"$MEMBERS"
read_bundle
[ -n "${SECRET_HACLUSTER_PASSWORD:-}" ] || die "no hacluster password on stdin"

names=() hosts=()
for spec in "${specs[@]}"; do
	names+=("${spec%%=*}")
	hosts+=("${spec%%=*}" "addr=${spec#*=}")
done

# pcs reads the password from stdin when it is not a terminal.
quiet pcs host auth "${hosts[@]}" -u hacluster <<<"$SECRET_HACLUSTER_PASSWORD"

ours() { grep -Eq "^[[:space:]]*cluster_name:[[:space:]]*${CLUSTER_NAME}[[:space:]]*$" /etc/corosync/corosync.conf 2>/dev/null; }
members() { pcs cluster corosync | sed -n 's/^[[:space:]]*name:[[:space:]]*//p'; }

if ! ours; then
	# knet with encryption on; a short token for fast failure detection.
	log "creating cluster $CLUSTER_NAME with ${names[*]}"
	quiet pcs cluster setup "$CLUSTER_NAME" "${hosts[@]}" \
		transport knet crypto cipher=aes256 hash=sha256 \
		totem token="$TOKEN_MS" consensus="$CONSENSUS_MS" join="$JOIN_MS" \
		--enable --start --wait="$START_WAIT_S"
else
	current=$(members)
	for ((i = 0; i < ${#names[@]}; i++)); do
		if ! grep -qx "${names[i]}" <<<"$current"; then
			log "adding ${names[i]}"
			quiet pcs cluster node add "${hosts[2 * i]}" "${hosts[2 * i + 1]}" --enable --start --wait="$START_WAIT_S"
		fi
	done
	for member in $current; do
		if ! printf '%s\n' "${names[@]}" | grep -qx "$member"; then
			log "removing $member"
			quiet pcs cluster node remove "$member" --force
		fi
	done
	quiet pcs cluster start --all --wait="$START_WAIT_S"
	quiet pcs cluster enable --all
fi

all_online() {
	local online
	online=$(crm_mon -1 --output-as=xml 2>/dev/null | grep -c '<node name=.* online="true"') || return 1
	[ "$online" -eq "${#names[@]}" ]
}
wait_for "all ${#names[@]} nodes online" "$START_WAIT_S" all_online

quiet pcs resource defaults update resource-stickiness="$STICKINESS" \
	migration-threshold="$MIGRATION_THRESHOLD" failure-timeout="$FAILURE_TIMEOUT"
quiet pcs property set no-quorum-policy="$NO_QUORUM_POLICY"
log "cluster $CLUSTER_NAME online: ${names[*]}"
