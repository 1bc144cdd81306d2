#!/bin/bash
# Backups on an app node: restic's settings and the bucket's key (root-only), the
# backup script and its timers; the nightly run itself decides which node backs up.
# The repository is made by the first node to get here (the program runs the
# control node's step first), and every node proves it can write to it: a wrong
# key fails this step, not a night.
# Arguments:
#   ENABLED  yes: backups on; no: the timers stop and the key and settings go
#            (the bucket and its backups stay)
# Bundle (ENABLED=yes): files: /etc/do-ha-stack/backup.env and the repository's
# password (secret), backup.conf, db-backup and its units.
set -euo pipefail
step_args ENABLED -- "$@"
timers=(do-ha-backup.timer do-ha-backup-check.timer do-ha-binlog.timer)
read_bundle
if [ "$ENABLED" != yes ]; then
	systemctl disable --now "${timers[@]}" >/dev/null 2>&1 || true
	rm -f /etc/systemd/system/do-ha-backup* /etc/systemd/system/do-ha-binlog.* \
		/usr/local/lib/do-ha-stack/db-backup /usr/local/lib/do-ha-stack/db-restore \
		/etc/do-ha-stack/backup.env /etc/do-ha-stack/backup-repository.key /etc/do-ha-stack/backup.conf
	systemctl daemon-reload
	log "backups off on this node"
	exit 0
fi
command -v restic >/dev/null ||
	DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -q -o DPkg::Lock::Timeout=300 restic
systemctl daemon-reload
/usr/local/lib/do-ha-stack/db-backup init
systemctl enable --now "${timers[@]}" >/dev/null 2>&1
log "backups on: $(systemctl show -P NextElapseUSecRealtime do-ha-backup.timer | cut -c 1-40) next"
