#!/bin/bash
# Hand MariaDB and nginx from systemd to pacemaker on an app node: they stop
# being started at boot, and stop now unless pacemaker already runs them.
# Args: BOOTSTRAP(yes|no). The replicas hand over first; the bootstrap primary
# then commits one more transaction, so its GTID is the highest and pacemaker's
# first election (ocf:heartbeat:mariadb promotes the highest GTID) picks it.
set -euo pipefail
BOOTSTRAP=${1:-no}
read_bundle
for unit in mariadb nginx; do
	systemctl disable "$unit.service" >/dev/null 2>&1
done
if managed_by_pacemaker; then
	log "pacemaker already manages mariadb and nginx"
	exit 0
fi
if [ "$BOOTSTRAP" = yes ]; then
	mariadb <<'SQL'
CREATE TABLE IF NOT EXISTS do_ha_canary.handover (id INT PRIMARY KEY, at TIMESTAMP(6) NOT NULL);
REPLACE INTO do_ha_canary.handover VALUES (1, CURRENT_TIMESTAMP(6));
SQL
fi
systemctl stop mariadb.service nginx.service
log "mariadb and nginx are left to pacemaker"
