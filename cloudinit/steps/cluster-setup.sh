#!/bin/bash
# Form the corosync/pacemaker cluster, or bring an existing one up to the
# program's membership. Runs on the bootstrap node.
# Args: CLUSTER_NAME TOKEN_MS NAME=PRIVATE_IP... Bundle: secret HACLUSTER_PASSWORD.
set -euo pipefail
CLUSTER_NAME=$1 TOKEN_MS=$2
shift 2
read_bundle
[ -n "${SECRET_HACLUSTER_PASSWORD:-}" ] || die "no hacluster password on stdin"

names=() hosts=()
for spec in "$@"; do
	names+=("${spec%%=*}")
	hosts+=("${spec%%=*}" "addr=${spec#*=}")
done

# pcs reads the password from stdin when it is not a terminal.
quiet pcs host auth "${hosts[@]}" -u hacluster <<<"$SECRET_HACLUSTER_PASSWORD"

ours() { grep -Eq "^[[:space:]]*cluster_name:[[:space:]]*${CLUSTER_NAME}[[:space:]]*$" /etc/corosync/corosync.conf 2>/dev/null; }
members() { pcs cluster corosync | sed -n 's/^[[:space:]]*name:[[:space:]]*//p'; }

if ! ours; then
	# knet with encryption on; a short token for fast failure detection, the
	# consensus timeout scaled with it so a busy node is not declared dead.
	log "creating cluster $CLUSTER_NAME with ${names[*]}"
	quiet pcs cluster setup "$CLUSTER_NAME" "${hosts[@]}" \
		transport knet crypto cipher=aes256 hash=sha256 \
		totem token="$TOKEN_MS" consensus="$((TOKEN_MS * 12 / 10))" join=100 \
		--enable --start --wait=180
else
	current=$(members)
	for ((i = 0; i < ${#names[@]}; i++)); do
		if ! grep -qx "${names[i]}" <<<"$current"; then
			log "adding ${names[i]}"
			quiet pcs cluster node add "${hosts[2 * i]}" "${hosts[2 * i + 1]}" --enable --start --wait=180
		fi
	done
	for member in $current; do
		if ! printf '%s\n' "${names[@]}" | grep -qx "$member"; then
			log "removing $member"
			quiet pcs cluster node remove "$member" --force
		fi
	done
	quiet pcs cluster start --all --wait=180
	quiet pcs cluster enable --all
fi

all_online() {
	local online
	online=$(crm_mon -1 --output-as=xml 2>/dev/null | grep -c '<node name=.* online="true"') || return 1
	[ "$online" -eq "${#names[@]}" ]
}
wait_for "all ${#names[@]} nodes online" 180 all_online

# Resources stay where they run unless that node fails; a resource failing three
# times moves, and its failures are forgotten after two minutes.
quiet pcs resource defaults update resource-stickiness=200 migration-threshold=3 failure-timeout=120s
quiet pcs property set no-quorum-policy=stop
log "cluster $CLUSTER_NAME online: ${names[*]}"
