#!/bin/bash
# Form the corosync/pacemaker cluster, or bring an existing one up to the
# program's membership. Runs on the control node (setting controlNode): any
# member can, so it runs from wherever the cluster already is.
# Arguments (values and why: infra/tuning.py):
#   CLUSTER_NAME         the corosync cluster's name
#   MEMBERS              every member as NAME=PRIVATE_IP, space separated
#   TOKEN_MS             corosync token timeout
#   TOKEN_COEFFICIENT_MS how much corosync adds to the token per node beyond two
#   CONSENSUS_MS         corosync consensus timeout
#   JOIN_MS              corosync join timeout
#   START_WAIT_S         how long pcs waits for nodes to start or join
#   DC_DEADTIME          how long a starting node waits for a DC before an election
#   STICKINESS           pacemaker's default resource-stickiness
#   MIGRATION_THRESHOLD  failures on a node before a resource moves
#   FAILURE_TIMEOUT      when failures are forgotten
#   NO_QUORUM_POLICY     what a partition without quorum does
#   LOAD_THRESHOLD       the CPU load above which pacemaker runs fewer actions at once
#   PE_ERROR_SERIES_MAX  how many scheduler inputs with a configuration error are kept
#   TRANSITION_DELAY     how long the DC waits after a change before its scheduler runs
# Bundle: secret HACLUSTER_PASSWORD.
set -euo pipefail
step_args CLUSTER_NAME MEMBERS TOKEN_MS TOKEN_COEFFICIENT_MS CONSENSUS_MS JOIN_MS START_WAIT_S DC_DEADTIME STICKINESS MIGRATION_THRESHOLD \
	FAILURE_TIMEOUT NO_QUORUM_POLICY LOAD_THRESHOLD PE_ERROR_SERIES_MAX \
	TRANSITION_DELAY -- "$@"
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
# The running cluster's members as "NAME ADDRESS" lines (corosync.conf's nodelist).
members() {
	pcs cluster corosync | awk '
		/^[[:space:]]*node[[:space:]]*\{/ { name = ""; addr = "" }
		/^[[:space:]]*ring0_addr:/ { addr = $2 }
		/^[[:space:]]*name:/ { name = $2 }
		/^[[:space:]]*\}/ { if (name != "") print name, addr; name = "" }'
}
declared_addr() {
	local i
	for ((i = 0; i < ${#names[@]}; i++)); do
		[ "${names[i]}" != "$1" ] || { printf '%s\n' "${hosts[2 * i + 1]#addr=}"; return 0; }
	done
	return 1
}

totem=(token="$TOKEN_MS" token_coefficient="$TOKEN_COEFFICIENT_MS" consensus="$CONSENSUS_MS" join="$JOIN_MS")

if ! ours; then
	# knet with encryption on; a short token for fast failure detection.
	log "creating cluster $CLUSTER_NAME with ${names[*]}"
	quiet pcs cluster setup "$CLUSTER_NAME" "${hosts[@]}" \
		transport knet crypto cipher=aes256 hash=sha256 \
		totem "${totem[@]}" --enable
	# A new cluster has no CIB yet, so its first start would wait pacemaker's
	# default dc-deadtime (20 s) before electing a DC. This node starts from a CIB
	# that already holds ours (pcs setup removed any old one); its election
	# decides, and the DC hands its CIB to the others.
	cib=$(mktemp)
	trap 'rm -f "$cib"' EXIT
	cibadmin --empty >"$cib"
	CIB_file=$cib quiet crm_attribute --type crm_config --name dc-deadtime --update "$DC_DEADTIME"
	# Fencing is off until cluster-resources turns it on together with the fence
	# device (one CIB push): nothing runs before then that fencing would protect.
	# With it on and no device, the scheduler logs a configuration error, and
	# pacemaker 3.0 keeps that error for the life of the process: every later
	# transition would be "calculated with errors" and saved as such.
	CIB_file=$cib quiet crm_attribute --type crm_config --name stonith-enabled --update false
	install -o hacluster -g haclient -m 0600 "$cib" /var/lib/pacemaker/cib/cib.xml
	quiet pcs cluster start --all --wait="$START_WAIT_S"
else
	# Converge to the declared members by name and address: a member the program
	# no longer declares leaves; one whose address changed (a replaced droplet
	# keeps its name, not its address) leaves and joins again at the new address;
	# a new one joins. Each joining node gets the cluster's existing keys from pcs.
	declare -A current=()
	while read -r name addr; do current[$name]=$addr; done < <(members)
	leaving=() joining=()
	for name in "${!current[@]}"; do
		if ! want=$(declared_addr "$name"); then
			leaving+=("$name")
		elif [ "$want" != "${current[$name]}" ]; then
			log "$name moved from ${current[$name]} to $want"
			leaving+=("$name")
			joining+=("$name")
		fi
	done
	for name in "${names[@]}"; do
		[ -n "${current[$name]:-}" ] || joining+=("$name")
	done
	# One member at a time: with two gone at once the survivors could lose quorum,
	# and the volume its last good copy (see storage-volume.sh).
	if [ "${#leaving[@]}" -gt 1 ]; then
		die "refusing to remove or re-address ${leaving[*]} in one run: change one node at a time"
	fi
	for name in "${leaving[@]}"; do
		log "removing $name (${current[$name]}) from the cluster"
		# --force: a node being re-addressed is a fresh one that cannot report quorum.
		quiet pcs cluster node remove "$name" --force
	done
	for name in "${joining[@]}"; do
		log "adding $name at $(declared_addr "$name")"
		quiet pcs cluster node add "$name" "addr=$(declared_addr "$name")" --enable --start --wait="$START_WAIT_S"
	done
	quiet pcs cluster start --all --wait="$START_WAIT_S"
	quiet pcs cluster enable --all
fi

# Pacemaker keeps a node entry (and its attributes) for every node it has seen:
# forget those that are no longer members.
while read -r uname; do
	if [ -n "$uname" ] && ! declared_addr "$uname" >/dev/null; then
		log "forgetting former node $uname"
		quiet crm_node --force --remove "$uname"
	fi
done < <(cibadmin --query --scope nodes 2>/dev/null | sed -n 's/.*<node [^>]*uname="\([^"]*\)".*/\1/p')

all_online() {
	local online
	online=$(crm_mon -1 --output-as=xml 2>/dev/null | grep -c '<node name=.* online="true"') || return 1
	[ "$online" -eq "${#names[@]}" ]
}
wait_for "all ${#names[@]} nodes online" "$START_WAIT_S" all_online

# The failure-detection timings of a cluster formed earlier (or with other
# values): pcs writes them to every member's corosync.conf and corosync reloads
# them in place. A key corosync.conf lacks has corosync's default, never ours.
totem_value() {
	pcs cluster corosync | awk -v key="$1:" '/^totem[[:space:]]*\{/ { t = 1 } /^\}/ { t = 0 } t && $1 == key { print $2; exit }'
}
stale=()
for setting in "${totem[@]}"; do
	[ "$(totem_value "${setting%%=*}")" = "${setting#*=}" ] || stale+=("$setting")
done
if [ "${#stale[@]}" -gt 0 ]; then
	log "updating corosync's totem settings: ${stale[*]}"
	quiet pcs cluster config update totem "${stale[@]}"
fi

quiet pcs resource defaults update resource-stickiness="$STICKINESS" \
	migration-threshold="$MIGRATION_THRESHOLD" failure-timeout="$FAILURE_TIMEOUT"
quiet pcs property set no-quorum-policy="$NO_QUORUM_POLICY" dc-deadtime="$DC_DEADTIME" \
	load-threshold="$LOAD_THRESHOLD" pe-error-series-max="$PE_ERROR_SERIES_MAX"
# In milliseconds, which pcs refuses (it takes whole seconds): pacemaker's own tool.
quiet crm_attribute --type crm_config --name transition-delay --update "$TRANSITION_DELAY"
log "cluster $CLUSTER_NAME online: ${names[*]}"
