#!/bin/bash
# Mount the shared volume on an app node, now and at every boot.
# Arguments:
#   VOLUME          the volume's name
#   MOUNTPOINT      where it is mounted
#   SERVER          the peer the volume layout is fetched from (this node)
#   BACKUP_SERVERS  the other peers, colon separated
set -euo pipefail
step_args VOLUME MOUNTPOINT SERVER BACKUP_SERVERS -- "$@"
read_bundle

# glusterd must run before the mount (systemd ordering); other servers hand
# out the volume layout when the local one is down.
entry="$SERVER:/$VOLUME $MOUNTPOINT glusterfs defaults,_netdev,backup-volfile-servers=$BACKUP_SERVERS,x-systemd.requires=glusterd.service,x-systemd.after=glusterd.service 0 0"
install -d -m 0755 "$MOUNTPOINT"
put_file 0644 root:root /etc/fstab < <(grep -v "[[:space:]]${MOUNTPOINT}[[:space:]]" /etc/fstab || true; printf "%s\n" "$entry")
if changed /etc/fstab; then
	systemctl daemon-reload
fi
if ! mountpoint -q "$MOUNTPOINT"; then
	wait_for "$VOLUME mounted at $MOUNTPOINT" 60 mount "$MOUNTPOINT"
fi
wait_for "$MOUNTPOINT writable" 30 test -w "$MOUNTPOINT"
log "$VOLUME mounted at $MOUNTPOINT"
