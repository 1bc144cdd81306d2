#!/bin/bash
# Mount the shared volume on an app node, now and at every boot.
# Arguments:
#   VOLUME          the volume's name
#   MOUNTPOINT      where it is mounted
#   TLS             yes: the volume speaks TLS; a mount made before this node had
#                   TLS (cluster-node's secure-access) is made again
#   SERVER          the peer the volume layout is fetched from (this node)
#   BACKUP_SERVERS  the other peers, colon separated
# Bundle: files gluster-reconnect and its units (do-ha-gluster-reconnect.timer):
# the watch that restarts this node's mount or self-heal daemon when it stays cut
# off from a brick (GlusterFS 11.1's stale brick port, cloudinit/app/gluster-reconnect).
set -euo pipefail
step_args VOLUME MOUNTPOINT TLS SERVER BACKUP_SERVERS -- "$@"
read_bundle

# glusterd must run before the mount (systemd ordering); other servers hand
# out the volume layout when the local one is down. nofail: the mount is not
# ordered before remote-fs.target, which nginx's unit starts after. At boot the
# mount waits for glusterd (and its TLS handshakes), and pacemaker takes a start
# job still waiting there for a failed nginx start (fatal: it would not retry).
# What reads the volume says so itself (RequiresMountsFor=).
entry="$SERVER:/$VOLUME $MOUNTPOINT glusterfs defaults,_netdev,nofail,backup-volfile-servers=$BACKUP_SERVERS,x-systemd.requires=glusterd.service,x-systemd.after=glusterd.service 0 0"
put_file 0644 root:root /etc/fstab < <(grep -v "[[:space:]]${MOUNTPOINT}[[:space:]]" /etc/fstab || true; printf "%s\n" "$entry")
if changed /etc/fstab; then
	systemctl daemon-reload
fi
secure=/var/lib/glusterd/secure-access
[ "$TLS" != yes ] || [ -e "$secure" ] || die "no $secure: cluster-node turns TLS on first"
# The mount's client (its FUSE process) and how long it has run.
client_age() { ps -C glusterfs -o etimes=,args= | awk -v mp="$MOUNTPOINT" '$NF == mp && / --process-name fuse / { print $1; exit }'; }
if grep -qs "^[^ ]* $MOUNTPOINT fuse.glusterfs " /proc/self/mounts; then
	age=$(client_age)
	stale=""
	if [ -z "$age" ] || ! timeout 10 stat -t "$MOUNTPOINT" >/dev/null 2>&1; then
		stale="its client reaches no brick"
	elif [ "$TLS" = yes ] && [ "$age" -gt $(($(date +%s) - $(stat -c %Y "$secure"))) ]; then
		stale="it was mounted before TLS"
	fi
	if [ -n "$stale" ]; then
		log "mounting $MOUNTPOINT again: $stale"
		umount -l "$MOUNTPOINT"
	fi
fi
install -d -m 0755 "$MOUNTPOINT"  # after the check: a dead mount refuses even a chmod
if ! mountpoint -q "$MOUNTPOINT"; then
	wait_for "$VOLUME mounted at $MOUNTPOINT" 60 mount "$MOUNTPOINT"
fi
wait_for "$MOUNTPOINT writable" 30 test -w "$MOUNTPOINT"
if changed /etc/systemd/system/do-ha-gluster-reconnect.service || changed /etc/systemd/system/do-ha-gluster-reconnect.timer; then
	systemctl daemon-reload
fi
systemctl enable --now do-ha-gluster-reconnect.timer >/dev/null 2>&1
log "$VOLUME mounted at $MOUNTPOINT"
