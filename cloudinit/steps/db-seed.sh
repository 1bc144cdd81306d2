#!/bin/bash
# Seed this node's MariaDB from the primary without stopping or locking it, then
# replicate from it over TLS. A node that already replicates, or whose database
# pacemaker already manages, is never seeded again.
# Arguments:
#   PRIMARY       the bootstrap primary's private address (a running cluster's
#                 current primary wins)
#   START_WAIT_S  how long replication has to show both threads running
# Bundle: secret REPL_PASSWORD.
set -euo pipefail
step_args PRIMARY START_WAIT_S -- "$@"
read_bundle
[ -n "${SECRET_REPL_PASSWORD:-}" ] || die "no replication password on stdin"

both_running() {
	local status
	status=$(mariadb -e 'SHOW SLAVE STATUS\G')
	grep -q 'Slave_IO_Running: Yes' <<<"$status" && grep -q 'Slave_SQL_Running: Yes' <<<"$status"
}

marker=$STATE_DIR/db-seeded
if [ -e "$marker" ] || both_running || managed_by_pacemaker mariadb; then
	log "already a replica; not seeding again"
	exit 0
fi
# A seed that failed before replication ran left nothing worth keeping.
mariadb -e 'STOP SLAVE; RESET SLAVE ALL'
# Joining a running cluster: seed from whichever node is primary now.
current=$(crm_attribute --type crm_config --name mariadb_REPL_INFO -s mysql_replication --query -q 2>/dev/null || true)
PRIMARY=${current:-$PRIMARY}

# The password reaches the clients through a file descriptor, never argv.
client_cnf() {
	printf '[client]\nuser=repl\npassword="%s"\nssl\nssl-ca=/etc/mysql/tls/ca.pem\nssl-verify-server-cert\n' \
		"$(sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' <<<"$SECRET_REPL_PASSWORD")"
}

mapfile -t databases < <(mariadb --defaults-extra-file=<(client_cnf) -h "$PRIMARY" -N -e \
	"SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN
	 ('mysql','information_schema','performance_schema','sys')")
[ "${#databases[@]}" -gt 0 ] || die "the primary at $PRIMARY has no database to seed from"

log "seeding ${databases[*]} from $PRIMARY"
started=$SECONDS
# One consistent InnoDB snapshot (no global read lock) with its GTID, streamed
# straight into the local server: no dump file is ever written. Applied without
# binlogging, so this node gains no transactions of its own.
{
	echo "SET SESSION sql_log_bin = 0;"
	mariadb-dump --defaults-extra-file=<(client_cnf) -h "$PRIMARY" \
		--single-transaction --master-data=1 --gtid --routines --events --triggers \
		--databases "${databases[@]}"
} | mariadb

mariadb <<SQL
CHANGE MASTER TO MASTER_HOST='$PRIMARY', MASTER_PORT=3306,
  MASTER_USER='repl', MASTER_PASSWORD='$(sql_escape "$SECRET_REPL_PASSWORD")',
  MASTER_SSL=1, MASTER_SSL_CA='/etc/mysql/tls/ca.pem', MASTER_SSL_VERIFY_SERVER_CERT=1,
  MASTER_USE_GTID=slave_pos;
START SLAVE;
SQL

for _ in $(seq "$START_WAIT_S"); do
	both_running && break
	sleep 1
done
if ! both_running; then
	mariadb -e 'SHOW SLAVE STATUS\G' | grep -E 'Running|Last_.*Error' >&2
	die "replication did not start"
fi
date -u +%FT%TZ >"$marker"
log "replicating from $PRIMARY over TLS, seeded in $((SECONDS - started)) s"
