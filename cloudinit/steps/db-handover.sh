#!/bin/bash
# Hand MariaDB from systemd to pacemaker on an app node: it stops being
# started at boot, and stops now unless pacemaker already runs it.
# The replicas hand over first; the bootstrap primary then commits one more
# transaction, so its GTID is the highest and pacemaker's first election
# (ocf:heartbeat:mariadb promotes the highest GTID) picks it.
# Arguments:
#   BOOTSTRAP  yes on the bootstrap primary, else no
set -euo pipefail
step_args BOOTSTRAP -- "$@"
read_bundle
systemctl disable mariadb.service >/dev/null 2>&1
if managed_by_pacemaker mariadb; then
	log "pacemaker already manages mariadb"
	exit 0
fi
if [ "$BOOTSTRAP" = yes ]; then
	mariadb <<'SQL'
CREATE TABLE IF NOT EXISTS do_ha_canary.handover (id INT PRIMARY KEY, at TIMESTAMP(6) NOT NULL);
REPLACE INTO do_ha_canary.handover VALUES (1, CURRENT_TIMESTAMP(6));
SQL
fi
systemctl stop mariadb.service
log "mariadb is left to pacemaker"
