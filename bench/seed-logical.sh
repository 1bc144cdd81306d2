#!/bin/bash
# The logical seed as db-seed.sh did it before physical streaming (kept for
# bench/seed.py only, run with cloudinit/steps/lib.sh in front like a step): one
# consistent InnoDB snapshot from mariadb-dump (no global read lock), streamed
# over TLS straight into the local server, then GTID replication from it. The
# benchmark starts it on a replica whose MariaDB is freshly initialised.
# Arguments:
#   PRIMARY       the primary's private address
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
client_cnf() {
	printf '[client]\nuser=repl\npassword="%s"\nssl\nssl-ca=/etc/mysql/tls/ca.pem\nssl-verify-server-cert\n' \
		"$(sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' <<<"$SECRET_REPL_PASSWORD")"
}

mariadb -e 'STOP SLAVE; RESET SLAVE ALL'
mapfile -t databases < <(mariadb --defaults-extra-file=<(client_cnf) -h "$PRIMARY" -N -e \
	"SELECT schema_name FROM information_schema.schemata WHERE schema_name NOT IN
	 ('mysql','information_schema','performance_schema','sys')")
[ "${#databases[@]}" -gt 0 ] || die "the primary at $PRIMARY has no database to seed from"
started=$SECONDS
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
wait_for "replication" "$START_WAIT_S" both_running
log "seeded ${databases[*]} from $PRIMARY (logical) in $((SECONDS - started)) s"
