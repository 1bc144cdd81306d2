#!/bin/bash
# Make this node's MariaDB a replica of the current primary, seeding it first when
# its data directory holds no copy of the cluster's data (a new node, an emptied
# directory) or a diverged one (replication failed, or it has transactions the
# primary never had). The primary and a healthy replica are left alone: a second
# run changes nothing. Runs on every app node, so that a node replaced after a
# failover is seeded from whichever node is primary by then.
#
# The primary is the one member whose MariaDB is writable (pacemaker promoted
# it). Before anyone is promoted (a first bring-up) it is the bootstrap node, if
# it never replicated and already has every transaction the others have.
#
# The copy is physical and streamed, without downtime or a restart of the
# primary (bench/seed.py measured it against mariadb-dump, see README). Every app
# node runs do-ha-db-donor (installed by db-node.sh): socat on the private
# address, mutual TLS 1.3 with the stack's MariaDB CA, which for each client
# runs `mariadb-backup --backup --stream=xbstream` as the mysql user through the
# socket. So the primary's side needs no step of its own: pulumi-command runs
# each step on one node and cannot know which node will be primary, and a
# standing donor serves whichever it is. This step connects to the primary's
# donor with this node's own certificate, unpacks and prepares the copy beside
# the data directory, swaps it in, and replicates from the GTID the copy
# recorded. While it does, pacemaker is kept from starting MariaDB here (a
# location constraint, removed at the end; a run that died leaves it, and the
# next run finishes the job).
#
# A seeded data directory carries the file do-ha-stack.lineage; a node without
# it (or without any data directory) is seeded whatever its replication says.
#
# Arguments:
#   APP_MEMBERS   the app nodes as NAME=PRIVATE_IP, space separated
#   BOOTSTRAP     the bootstrap node's NAME (the primary of a first bring-up)
#   SEED_PORT     the donors' port
#   WAIT_S        how long each wait may take (pacemaker stopping or starting
#                 MariaDB here, replication becoming healthy)
# Bundle: secret REPL_PASSWORD.
set -euo pipefail
step_args APP_MEMBERS BOOTSTRAP SEED_PORT WAIT_S -- "$@"
read -ra member_specs <<<"$APP_MEMBERS"
read_bundle
[ -n "${SECRET_REPL_PASSWORD:-}" ] || die "no replication password on stdin"

DATADIR=/var/lib/mysql
TLS=/etc/mysql/tls
LINEAGE=$DATADIR/do-ha-stack.lineage
SELF=$(uname -n)
HOLD=do-ha-seeding-$SELF  # the location constraint that keeps pacemaker away

declare -A member_ip=()
for spec in "${member_specs[@]}"; do
	member_ip[${spec%%=*}]=${spec#*=}
done
[ -n "${member_ip[$SELF]:-}" ] || die "this node ($SELF) is not in APP_MEMBERS ($APP_MEMBERS)"
[ -n "${member_ip[$BOOTSTRAP]:-}" ] || die "BOOTSTRAP $BOOTSTRAP is not in APP_MEMBERS ($APP_MEMBERS)"

# The password reaches the clients through a file descriptor, never argv.
client_cnf() {
	printf '[client]\nuser=repl\npassword="%s"\nssl\nssl-ca=%s/ca.pem\nssl-verify-server-cert\n' \
		"$(sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' <<<"$SECRET_REPL_PASSWORD")" "$TLS"
}
# remote IP SQL: one value from a member's MariaDB, over TLS as repl.
remote() {
	mariadb --defaults-extra-file=<(client_cnf) --connect-timeout=5 -h "$1" -N -B -e "$2" 2>/dev/null
}
local_up() { mariadb -N -B -e 'SELECT 1' >/dev/null 2>&1; }
gtid_list() { tr -d ' \n' <<<"$1"; }

# gtid_within POSITION HISTORY: every domain-server-seqno of POSITION is at or
# below the seqno HISTORY has for that domain and server (comma-separated lists).
gtid_within() {
	local -A top=()
	local -a items
	local gtid key
	IFS=, read -ra items <<<"$2"
	for gtid in "${items[@]}"; do
		key=${gtid%-*}
		if [ "${gtid##*-}" -gt "${top[$key]:-0}" ]; then top[$key]=${gtid##*-}; fi
	done
	IFS=, read -ra items <<<"$1"
	for gtid in "${items[@]}"; do
		key=${gtid%-*}
		[ -n "${top[$key]:-}" ] && [ "${gtid##*-}" -le "${top[$key]}" ] || return 1
	done
}
# known_gtids IP: every transaction a member has, as the last GTID per domain and server.
known_gtids() {
	local state
	state=$(remote "$1" 'SELECT CONCAT_WS(",", NULLIF(@@gtid_binlog_state, ""), NULLIF(@@gtid_slave_pos, ""))') || return 1
	gtid_list "$state"
}

# Sets PRIMARY (a member's name) or dies saying why there is none.
find_primary() {
	local name read_only boot_history pos
	local -a writable=()
	for name in "${!member_ip[@]}"; do
		read_only=$(remote "${member_ip[$name]}" 'SELECT @@read_only') || continue
		if [ "$read_only" = 0 ]; then writable+=("$name"); fi
	done
	[ "${#writable[@]}" -le 1 ] || die "more than one writable MariaDB (${writable[*]}): not seeding from either"
	if [ "${#writable[@]}" -eq 1 ]; then
		PRIMARY=${writable[0]}
		return
	fi
	# Nobody promoted: a first bring-up, unless the bootstrap node ever replicated
	# or lacks transactions another member has (it was replaced, say).
	if ! boot_history=$(known_gtids "${member_ip[$BOOTSTRAP]}") ||
		[ -n "$(remote "${member_ip[$BOOTSTRAP]}" 'SELECT @@gtid_slave_pos')" ]; then
		die "no writable MariaDB among the members and $BOOTSTRAP is no first primary; try again once pacemaker has promoted one"
	fi
	for name in "${!member_ip[@]}"; do
		[ "$name" != "$BOOTSTRAP" ] || continue
		pos=$(remote "${member_ip[$name]}" 'SELECT @@gtid_current_pos') || continue
		gtid_within "$(gtid_list "$pos")" "$boot_history" ||
			die "no writable MariaDB among the members, and $name has transactions $BOOTSTRAP lacks; try again once pacemaker has promoted one"
	done
	PRIMARY=$BOOTSTRAP
}

# failcount: how often pacemaker's MariaDB failed here (0 if never).
failcount() {
	local count
	count=$(crm_failcount --query --resource mariadb --node "$SELF" -q 2>/dev/null) || count=0
	echo "${count:-0}"
}

# Sets VERDICT to healthy, seed (REASON says why) or wait (REASON: what is awaited).
judge() {
	local status io sql io_errno sql_errno host pos history
	VERDICT=seed
	if ! local_up; then
		if [ ! -d "$DATADIR/mysql" ]; then
			REASON="the data directory is empty"
		elif [ ! -e "$LINEAGE" ]; then
			REASON="this data directory was never seeded"
		elif managed_by_pacemaker mariadb && [ "$(failcount)" != 0 ]; then
			REASON="pacemaker failed to run MariaDB here"
		else
			VERDICT=wait REASON="MariaDB is not running here"
		fi
		return
	fi
	if [ ! -e "$LINEAGE" ]; then
		REASON="this data directory was never seeded"
		return
	fi
	status=$(mariadb -e 'SHOW SLAVE STATUS\G')
	field() { sed -n "s/^ *$1: //p" <<<"$status"; }
	io=$(field Slave_IO_Running) sql=$(field Slave_SQL_Running) host=$(field Master_Host)
	io_errno=$(field Last_IO_Errno) sql_errno=$(field Last_SQL_Errno)
	if [ -z "$status" ]; then
		VERDICT=wait REASON="this node does not replicate"
	elif [ "${sql_errno:-0}" != 0 ]; then
		REASON="replication failed: $(field Last_SQL_Error | cut -c1-200)"
	elif [ "${io_errno:-0}" = 1236 ]; then
		REASON="the primary refused our position: $(field Last_IO_Error | cut -c1-200)"
	elif ! pos=$(mariadb -N -B -e 'SELECT @@gtid_current_pos') || ! history=$(known_gtids "$PRIMARY_IP"); then
		VERDICT=wait REASON="GTID positions unavailable"
	elif ! gtid_within "$(gtid_list "$pos")" "$history"; then
		REASON="this node has transactions the primary never had ($(gtid_list "$pos") vs $history)"
	elif [ "$host" != "$PRIMARY_IP" ]; then
		VERDICT=wait REASON="replicating from $host, not $PRIMARY_IP"
	elif [ "$io" != Yes ] || [ "$sql" != Yes ]; then
		VERDICT=wait REASON="replication threads IO=$io SQL=$sql"
	else
		VERDICT=healthy REASON="replicating from $PRIMARY ($PRIMARY_IP)"
	fi
}

hold_exists() { cibadmin --query --scope constraints --xpath "//rsc_location[@id='$HOLD']" >/dev/null 2>&1; }
no_local_server() { ! pidof mariadbd mariadbd-safe >/dev/null; }
# Pacemaker stops MariaDB here and starts it nowhere here until release().
hold() {
	hold_exists || cibadmin --create --scope constraints --xml-text \
		"<rsc_location id='$HOLD' rsc='mariadb-clone' node='$SELF' score='-INFINITY'/>"
	# A server systemd started (a new node pacemaker has not taken over) stops here.
	if systemctl is-active --quiet mariadb.service; then systemctl stop mariadb.service; fi
	wait_for "pacemaker to stop MariaDB here" "$WAIT_S" no_local_server
}
release() {
	if hold_exists; then cibadmin --delete --scope constraints --xml-text "<rsc_location id='$HOLD'/>"; fi
	# Failures of the old copy must not keep pacemaker from starting the new one.
	quiet crm_resource --cleanup --resource mariadb-clone --node "$SELF"
}

# configure GTID: replication settings written into the new copy by a private
# server (no network, no replication threads) before anyone else starts it.
SEED_SOCK=/run/mysqld/do-ha-seed.sock
seed_server_up() { mariadb -S "$SEED_SOCK" -e 'SELECT 1' >/dev/null 2>&1; }
configure() {
	local pid
	install -d -m 0755 -o mysql -g mysql /run/mysqld
	/usr/sbin/mariadbd --user=mysql --skip-networking --skip-slave-start --tmpdir=/tmp --socket="$SEED_SOCK" \
		--pid-file=/run/mysqld/do-ha-seed.pid >"$STATE_DIR/seed-server.log" 2>&1 &
	pid=$!
	# shellcheck disable=SC2064  # this pid, now
	trap "kill $pid 2>/dev/null || true" EXIT
	wait_for "the seeded copy to start" "$WAIT_S" seed_server_up
	mariadb -S "$SEED_SOCK" <<SQL
STOP SLAVE;
RESET SLAVE ALL;
SET GLOBAL gtid_slave_pos = '$1';
CHANGE MASTER TO MASTER_HOST='$PRIMARY_IP', MASTER_PORT=3306,
  MASTER_USER='repl', MASTER_PASSWORD='$(sql_escape "$SECRET_REPL_PASSWORD")',
  MASTER_SSL=1, MASTER_SSL_CA='$TLS/ca.pem', MASTER_SSL_VERIFY_SERVER_CERT=1,
  MASTER_USE_GTID=slave_pos;
SQL
	mariadb-admin -S "$SEED_SOCK" shutdown
	wait "$pid" || die "the seeded copy's server did not stop cleanly (see $STATE_DIR/seed-server.log)"
	trap - EXIT
}

seed() {
	local staging=$DATADIR.seed old=$DATADIR.old managed=no started copied prepared bytes gtid=""
	log "seeding from $PRIMARY ($PRIMARY_IP): $REASON"
	if managed_by_pacemaker mariadb; then
		managed=yes
		hold
	fi
	rm -rf "$staging" "$old"
	install -d -m 0700 -o mysql -g mysql "$staging"
	started=$SECONDS
	# The stream: TLS 1.3, the primary's certificate checked against the CA and
	# its address, this node's certificate as the client's.
	socat -u "OPENSSL:$PRIMARY_IP:$SEED_PORT,cert=$TLS/server.pem,key=$TLS/server-key.pem,cafile=$TLS/ca.pem,verify=1,no-sni=1,openssl-min-proto-version=TLS1.3" STDOUT |
		mbstream -x -C "$staging"
	if [ ! -s "$staging/mariadb_backup_checkpoints" ] || [ ! -e "$staging/mariadb_backup_binlog_info" ]; then
		die "the copy from $PRIMARY is incomplete (see the primary's journal, do-ha-db-donor)"
	fi
	copied=$((SECONDS - started))
	bytes=$(du -sb "$staging" | cut -f1)
	quiet mariadb-backup --prepare --target-dir="$staging" --use-memory=256M
	prepared=$((SECONDS - started - copied))
	read -r _ _ gtid <"$staging/mariadb_backup_binlog_info" || true
	# The primary's replication state and binary logs are not this node's.
	rm -f "$staging"/*.info "$staging"/mariadb-bin.* "$staging"/mariadb-relay-bin.*
	chown -R mysql:mysql "$staging"
	chmod 0755 "$staging"

	if [ "$managed" = no ] && ! no_local_server; then systemctl stop mariadb.service; fi
	no_local_server || die "MariaDB still runs here; not replacing its data directory"
	if [ -d "$DATADIR" ]; then mv "$DATADIR" "$old"; fi
	mv "$staging" "$DATADIR"
	configure "$gtid"
	printf 'seeded from %s (%s) at %s, gtid %s, %s bytes\n' "$PRIMARY" "$PRIMARY_IP" "$(date -u +%FT%TZ)" \
		"${gtid:-none}" "$bytes" >"$LINEAGE"
	chown mysql:mysql "$LINEAGE"
	if [ "$managed" = yes ]; then
		release
	else
		systemctl start mariadb.service
		mariadb -e 'START SLAVE'
	fi
	wait_healthy
	rm -rf "$old"
	log "seeded $bytes bytes from $PRIMARY over TLS in $((SECONDS - started)) s (stream $copied s," \
		"prepare $prepared s, start and catch up $((SECONDS - started - copied - prepared)) s), gtid ${gtid:-none}"
}

wait_healthy() {
	local deadline=$((SECONDS + WAIT_S))
	while judge && [ "$VERDICT" = wait ] && [ "$SECONDS" -lt "$deadline" ]; do
		sleep 2
	done
	[ "$VERDICT" = healthy ] || {
		mariadb -e 'SHOW SLAVE STATUS\G' 2>&1 | grep -E 'Running|Last_.*Error' >&2 || true
		die "not a healthy replica after seeding: $REASON"
	}
}

find_primary
PRIMARY_IP=${member_ip[$PRIMARY]}
if [ "$PRIMARY" = "$SELF" ]; then
	# The primary's data is the cluster's: mark it so (once), then nothing to do.
	if [ ! -e "$LINEAGE" ] && local_up; then
		printf 'primary at %s\n' "$(date -u +%FT%TZ)" >"$LINEAGE"
		chown mysql:mysql "$LINEAGE"
	fi
	log "this node is the primary; nothing to seed"
	exit 0
fi
# A replica seeded before lineage files existed carries the old marker.
if [ -e "$STATE_DIR/db-seeded" ] && [ -d "$DATADIR/mysql" ] && [ ! -e "$LINEAGE" ]; then
	mv "$STATE_DIR/db-seeded" "$LINEAGE"
	chown mysql:mysql "$LINEAGE"
fi

if hold_exists; then
	REASON="an earlier seed did not finish"
	seed
	exit 0
fi
# A replica that is starting or reconnecting gets WAIT_S to show it is healthy;
# evidence of divergence, or no copy at all, seeds at once.
deadline=$((SECONDS + WAIT_S))
judge
while [ "$VERDICT" = wait ] && [ "$SECONDS" -lt "$deadline" ]; do
	sleep 2
	judge
done
if [ "$VERDICT" = healthy ]; then
	log "a healthy replica, $REASON; nothing to do"
	exit 0
fi
seed
