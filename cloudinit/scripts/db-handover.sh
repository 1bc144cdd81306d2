#!/bin/bash
# Hand MariaDB and nginx from systemd to pacemaker on an app node: they stop
# being started at boot, and stop now unless pacemaker already runs them.
set -euo pipefail
read_bundle
for unit in mariadb nginx; do
	systemctl disable "$unit.service" >/dev/null 2>&1
done
if crm_resource --resource mariadb --query-xml >/dev/null 2>&1; then
	log "pacemaker already manages mariadb and nginx"
	exit 0
fi
systemctl stop mariadb.service nginx.service
log "mariadb and nginx are left to pacemaker"
