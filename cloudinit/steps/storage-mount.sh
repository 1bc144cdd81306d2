#!/bin/bash
# Mount the shared volume on an app node, now and at every boot.
# Args: VOLUME MOUNTPOINT SERVER BACKUP_SERVERS(colon list)
set -euo pipefail
VOLUME=$1 MOUNTPOINT=$2 SERVER=$3 BACKUPS=$4
read_bundle

# glusterd must run before the mount (systemd ordering); other servers hand
# out the volume layout when the local one is down.
entry="$SERVER:/$VOLUME $MOUNTPOINT glusterfs defaults,_netdev,backup-volfile-servers=$BACKUPS,x-systemd.requires=glusterd.service,x-systemd.after=glusterd.service 0 0"
install -d -m 0755 "$MOUNTPOINT"
put_file 0644 root:root /etc/fstab < <(grep -v "[[:space:]]${MOUNTPOINT}[[:space:]]" /etc/fstab || true; printf "%s\n" "$entry")
if changed /etc/fstab; then
	systemctl daemon-reload
fi
if ! mountpoint -q "$MOUNTPOINT"; then
	wait_for "$VOLUME mounted at $MOUNTPOINT" 60 mount "$MOUNTPOINT"
fi
wait_for "$MOUNTPOINT writable" 30 test -w "$MOUNTPOINT"
# nginx's document root (cloudinit/app/nginx-site.conf) lives on the shared volume.
install -d -m 0755 "$MOUNTPOINT/www"
log "$VOLUME mounted at $MOUNTPOINT"
