#!/bin/bash
# MariaDB on an app node: TLS material, replication settings, the replication
# and canary users, and the seed donor (do-ha-db-donor, see db-seed.sh). Re-runs
# change only what differs and never touch data.
# Arguments:
#   VPC_HOSTS  the VPC as a MariaDB account host, network/netmask
#              (e.g. 10.10.0.0/255.255.240.0)
#   VPC_RANGE  the VPC as CIDR (the donor's port is open to it only)
#   SEED_PORT  the donor's port
#   BOOTSTRAP  yes on the bootstrap primary (creates the canary schema), else no
#   KILL_CONN_TIMEOUT_S  rpl_semi_sync_slave_kill_conn_timeout, also in the .cnf:
#              set on the running server too, which has no restart for it
# Bundle: secret REPL_PASSWORD; files: /etc/mysql/tls/*, the replication .cnf,
# the donor's and the sync guard's units and scripts.
set -euo pipefail
step_args VPC_HOSTS VPC_RANGE SEED_PORT BOOTSTRAP KILL_CONN_TIMEOUT_S -- "$@"
read_bundle
[ -n "${SECRET_REPL_PASSWORD:-}" ] || die "no replication password on stdin"

# Under pacemaker the server logs to a file (the agent's log parameter); Debian
# 13 logs to the journal and has no such directory.
install -d -m 2750 -o mysql -g adm /var/log/mysql

# Renewed certificates alone are loaded in place with FLUSH SSL: a running
# primary takes them without a restart (new connections, replication's
# included, use them; open ones keep their session).
# Only the server's own files restart or reload it (the donor and the guard are
# services of their own, below).
server_changed=()
tls_only=yes
for path in "${CHANGED[@]}"; do
	case $path in /etc/mysql/*) server_changed+=("$path") ;; *) continue ;; esac
	case $path in /etc/mysql/tls/*) ;; *) tls_only=no ;; esac
done

# The unit starts MariaDB only until pacemaker takes over (see db-handover.sh).
if ! managed_by_pacemaker mariadb; then
	if [ "${#server_changed[@]}" -gt 0 ] || ! systemctl is-active --quiet mariadb.service; then
		log "restarting mariadb for ${server_changed[*]:-a stopped server}"
		systemctl restart mariadb.service
	fi
elif [ "${#server_changed[@]}" -gt 0 ] && [ "$tls_only" = yes ]; then
	wait_for "mariadb" 60 mariadb -e 'SELECT 1' >/dev/null
	# LOCAL: not binlogged. On a replica a binlogged statement takes a GTID of its
	# own, and the primary's next one then stops replication (GTID strict mode).
	mariadb -e 'FLUSH LOCAL SSL'
	log "reloaded TLS certificates in place: ${server_changed[*]}"
elif [ "${#server_changed[@]}" -gt 0 ]; then
	log "warning: ${server_changed[*]} changed; restart mariadb through pacemaker when convenient"
fi
wait_for "mariadb" 60 mariadb -e 'SELECT 1' >/dev/null
[[ "$KILL_CONN_TIMEOUT_S" =~ ^[1-9][0-9]*$ ]] || die "KILL_CONN_TIMEOUT_S must be a positive integer"
mariadb -e "SET GLOBAL rpl_semi_sync_slave_kill_conn_timeout = $KILL_CONN_TIMEOUT_S"

pw=$(sql_escape "$SECRET_REPL_PASSWORD")

# Users exist on every node alike and are never binlogged, so replication and
# failover never depend on them. Each gets what it uses and no more:
# - repl@VPC, over TLS only: a replica's binlog stream (REPLICATION SLAVE); the
#   seeding step's questions to its peers read only system variables.
# - repl@localhost: the resource agent driving replication on its own node:
#   CHANGE MASTER, START/STOP SLAVE (REPLICATION SLAVE ADMIN), RESET SLAVE ALL
#   (RELOAD, in MariaDB 11.8 still), SHOW SLAVE STATUS (REPLICA MONITOR), SHOW
#   MASTER STATUS (BINLOG MONITOR), read_only (READ_ONLY ADMIN), and the
#   PROCESSLIST and KILL of a demotion (PROCESS, CONNECTION ADMIN). Its semi-sync
#   settings it makes as root.
# Stacks made before keep no more than that: what they had on top is revoked.
mariadb <<SQL
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS 'repl'@'$VPC_HOSTS' IDENTIFIED BY '$pw' REQUIRE SSL;
ALTER USER 'repl'@'$VPC_HOSTS' IDENTIFIED BY '$pw' REQUIRE SSL;
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'$VPC_HOSTS';
REVOKE BINLOG MONITOR, RELOAD, SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON *.* FROM 'repl'@'$VPC_HOSTS';
CREATE USER IF NOT EXISTS 'repl'@'localhost' IDENTIFIED BY '$pw';
ALTER USER 'repl'@'localhost' IDENTIFIED BY '$pw';
GRANT REPLICATION SLAVE ADMIN, REPLICA MONITOR, BINLOG MONITOR, READ_ONLY ADMIN, CONNECTION ADMIN, PROCESS, RELOAD ON *.* TO 'repl'@'localhost';
REVOKE SUPER ON *.* FROM 'repl'@'localhost';
CREATE USER IF NOT EXISTS 'do-ha-canary'@'localhost' IDENTIFIED VIA unix_socket;
GRANT SELECT, INSERT, DELETE ON do_ha_canary.* TO 'do-ha-canary'@'localhost';
SQL

# The canary schema is created once, on the bootstrap primary, and reaches the
# replicas through seeding and replication (never written on a replica).
if [ "$BOOTSTRAP" = yes ] && ! managed_by_pacemaker mariadb &&
	[ -z "$(mariadb -N -e "SHOW SLAVE STATUS")" ] &&
	[ -z "$(mariadb -N -e "SHOW DATABASES LIKE 'do_ha_canary'")" ]; then
	mariadb <<'SQL'
CREATE DATABASE do_ha_canary;
CREATE TABLE do_ha_canary.writes (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  client_key VARCHAR(64) NOT NULL UNIQUE,
  node VARCHAR(64) NOT NULL,
  at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE=InnoDB;
SQL
	log "created the canary schema"
fi
# Any app node may be the primary a replica is seeded from: each runs the donor.
# First boot opens its port on new nodes; nodes from before it get the rule here.
quiet ufw allow proto tcp from "$VPC_RANGE" to any port "$SEED_PORT" comment 'cluster'
systemctl daemon-reload
systemctl enable do-ha-db-donor.service >/dev/null 2>&1
donor_inputs=(/etc/systemd/system/do-ha-db-donor.service /usr/local/sbin/do-ha-db-donor /etc/mysql/tls/ca.pem
	/etc/mysql/tls/server.pem /etc/mysql/tls/server-key.pem)
restart_donor=no
for path in "${donor_inputs[@]}"; do
	if changed "$path"; then restart_donor=yes; fi
done
if [ "$restart_donor" = yes ] || ! systemctl is-active --quiet do-ha-db-donor.service; then
	systemctl restart do-ha-db-donor.service  # socat reads its certificates when it starts
fi

# The sync guard: idle until pacemaker runs this node's server as the primary.
systemctl enable do-ha-db-sync-guard.service >/dev/null 2>&1
if changed /etc/systemd/system/do-ha-db-sync-guard.service || changed /usr/local/lib/do-ha-stack/db-sync-guard ||
	! systemctl is-active --quiet do-ha-db-sync-guard.service; then
	systemctl restart do-ha-db-sync-guard.service
fi

log "mariadb configured (server_id $(mariadb -N -e 'SELECT @@server_id'))"
