#!/bin/bash
# Read-only health facts of one node, for tooling/status.py (`make status`).
# Sent on ssh's stdin and run as `sudo -n bash -s -- TIMEOUT_S VOLUME`; it writes
# nothing on the node except a temporary file for each probe's stderr. Its stdout
# is one JSON object: for each probe, {"rc": exit code, "out": stdout, "err":
# stderr}. It interprets nothing: tooling/status.py parses and judges, so the
# parsing is tested offline on outputs recorded from the lab.
set -uo pipefail
umask 077

timeout_s=${1:?timeout in seconds}
volume=${2:?GlusterFS volume name}
[[ "$timeout_s" =~ ^[0-9]+$ ]] || { echo "timeout must be whole seconds" >&2; exit 2; }
[[ "$volume" =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "bad volume name" >&2; exit 2; }
command -v jq >/dev/null || { echo "jq is missing on this node" >&2; exit 3; }

errfile=$(mktemp)
trap 'rm -f "$errfile"' EXIT

# probe NAME COMMAND...: one JSON object {NAME: {rc, out, err}} on stdout. A hung
# tool (gluster and crm tools can hang on a dead peer) ends after timeout_s.
probe() {
	local name=$1 out rc
	shift
	out=$(LC_ALL=C timeout --kill-after=2 "$timeout_s" "$@" 2>"$errfile")
	rc=$?
	jq -n --arg name "$name" --arg out "$out" --rawfile err "$errfile" --argjson rc "$rc" \
		'{($name): {rc: $rc, out: $out, err: $err}}'
}

metadata_url=http://169.254.169.254/metadata/v1.json
db_state="SHOW GLOBAL VARIABLES WHERE Variable_name IN ('read_only', 'server_id', 'gtid_binlog_pos',
	'gtid_current_pos', 'gtid_slave_pos', 'rpl_semi_sync_master_enabled', 'rpl_semi_sync_slave_enabled');
SHOW GLOBAL STATUS WHERE Variable_name IN ('Rpl_semi_sync_master_status', 'Rpl_semi_sync_master_clients',
	'Rpl_semi_sync_slave_status')"

{
	probe clock date '+%s %z'
	probe host uname -n
	probe units systemctl is-active corosync pacemaker glusterd
	# Only the droplet id and the reserved IP leave the node (v1.json also holds user-data).
	probe metadata bash -c "set -o pipefail; curl -fsS -m 3 $metadata_url | jq -c '{droplet_id, reserved_ip}'"
	probe crm_mon crm_mon --one-shot --output-as=xml --inactive --fence-history=3 --include=operations
	probe quorum corosync-quorumtool -s
	probe host_map crm_resource --resource fence-do --get-parameter pcmk_host_map
	probe mariadb mariadb --connect-timeout=5 -N -B -e "$db_state"
	probe replica mariadb --connect-timeout=5 -e 'SHOW SLAVE STATUS\G'
	# the sync guard: this node's mark (exit 105: never marked) and whether it runs
	probe in_sync crm_attribute --lifetime forever --name do-ha-db-in-sync --query --quiet
	probe sync_guard systemctl is-active do-ha-db-sync-guard.service
	probe heal gluster volume heal "$volume" info summary
} | jq -s 'add'
