#!/bin/bash
# MariaDB on an app node: TLS material, replication settings, the replication
# and canary users. Re-runs change only what differs and never touch data.
# Args: VPC_HOST_PATTERN (e.g. 10.99.0.%) BOOTSTRAP(yes|no)
# Bundle: secret REPL_PASSWORD; files: /etc/mysql/tls/*, the replication .cnf.
set -euo pipefail
VPC_HOSTS=$1 BOOTSTRAP=$2
read_bundle
[ -n "${SECRET_REPL_PASSWORD:-}" ] || die "no replication password on stdin"


# Under pacemaker the server logs to a file (the agent's log parameter); Debian
# 13 logs to the journal and has no such directory.
install -d -m 2750 -o mysql -g adm /var/log/mysql

# The unit starts MariaDB only until pacemaker takes over (see db-handover.sh).
if ! managed_by_pacemaker; then
	if [ "${#CHANGED[@]}" -gt 0 ] || ! systemctl is-active --quiet mariadb.service; then
		log "restarting mariadb for ${CHANGED[*]:-a stopped server}"
		systemctl restart mariadb.service
	fi
elif [ "${#CHANGED[@]}" -gt 0 ]; then
	log "warning: ${CHANGED[*]} changed; restart mariadb through pacemaker when convenient"
fi
wait_for "mariadb" 60 mariadb -e 'SELECT 1' >/dev/null

pw=$(sql_escape "$SECRET_REPL_PASSWORD")

# Users exist on every node alike and are never binlogged, so replication and
# failover never depend on them. repl@VPC replicates and seeds over TLS only;
# repl@localhost is what the resource agent uses to drive replication locally.
mariadb <<SQL
SET SESSION sql_log_bin = 0;
CREATE USER IF NOT EXISTS 'repl'@'$VPC_HOSTS' IDENTIFIED BY '$pw' REQUIRE SSL;
ALTER USER 'repl'@'$VPC_HOSTS' IDENTIFIED BY '$pw' REQUIRE SSL;
GRANT REPLICATION SLAVE, BINLOG MONITOR, RELOAD, SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON *.* TO 'repl'@'$VPC_HOSTS';
CREATE USER IF NOT EXISTS 'repl'@'localhost' IDENTIFIED BY '$pw';
ALTER USER 'repl'@'localhost' IDENTIFIED BY '$pw';
GRANT REPLICATION SLAVE ADMIN, REPLICA MONITOR, BINLOG MONITOR, READ_ONLY ADMIN, CONNECTION ADMIN, PROCESS, RELOAD, SUPER ON *.* TO 'repl'@'localhost';
CREATE USER IF NOT EXISTS 'do-ha-canary'@'localhost' IDENTIFIED VIA unix_socket;
GRANT SELECT, INSERT ON do_ha_canary.* TO 'do-ha-canary'@'localhost';
SQL

# The canary schema is created once, on the bootstrap primary, and reaches the
# replicas through seeding and replication (never written on a replica).
if [ "$BOOTSTRAP" = yes ] && ! managed_by_pacemaker &&
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

# The canary write endpoint and the site nginx serves on the active node.
if ! id -u do-ha-canary >/dev/null 2>&1; then
	useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin do-ha-canary
	# rkhunter compares users and groups with its first-boot copies (in its
	# TMPDIR): record a user added on purpose, so the daily scan stays clean.
	if [ -f /var/lib/rkhunter/tmp/passwd ]; then
		cp -p /etc/passwd /etc/group /var/lib/rkhunter/tmp/
		chmod 0600 /var/lib/rkhunter/tmp/passwd /var/lib/rkhunter/tmp/group
	fi
fi
ln -sfn /etc/nginx/sites-available/do-ha-stack /etc/nginx/sites-enabled/do-ha-stack
rm -f /etc/nginx/sites-enabled/default
systemctl daemon-reload
systemctl enable do-ha-canary.service >/dev/null 2>&1
if changed /usr/local/lib/do-ha-stack/canary.py || ! systemctl is-active --quiet do-ha-canary.service; then
	systemctl restart do-ha-canary.service
fi
nginx -t -q
if systemctl is-active --quiet nginx.service; then
	systemctl reload nginx.service
fi
log "mariadb configured (server_id $(mariadb -N -e 'SELECT @@server_id'))"
