#!/bin/bash
# Create the replicated GlusterFS volume once; re-runs only re-apply its options.
# Runs on the bootstrap node.
# Args: VOLUME BRICK_DIR ARBITER(yes|no) ALLOW(comma list) PEER_IP... (app nodes
# first, the arbiter's last).
set -euo pipefail
VOLUME=$1 BRICK_DIR=$2 ARBITER=$3 ALLOW=$4
shift 4
peers=("$@")
read_bundle

self=$(hostname -I)
for ip in "${peers[@]}"; do
	case " $self " in *" $ip "*) continue ;; esac
	# Probe only new peers; the CLI can hang on a peer it already knows.
	gluster pool list | grep -q "[[:space:]]${ip}[[:space:]]" || quiet gluster --timeout=60 peer probe "$ip"
done
connected() {
	[ "$(gluster pool list | grep -c 'Connected')" -ge "${#peers[@]}" ]
}
wait_for "all ${#peers[@]} gluster peers connected" 120 connected

if ! gluster volume info "$VOLUME" >/dev/null 2>&1; then
	bricks=()
	for ip in "${peers[@]}"; do bricks+=("$ip:$BRICK_DIR"); done
	if [ "$ARBITER" = yes ]; then
		layout=(replica 3 arbiter 1)
	else
		log "warning: replica 2 without an arbiter can split-brain; add a witness node"
		layout=(replica 2)
	fi
	log "creating volume $VOLUME: ${layout[*]} ${bricks[*]}"
	# force: the bricks live on the droplets' root filesystem.
	quiet gluster --mode=script volume create "$VOLUME" "${layout[@]}" "${bricks[@]}" force
fi

# Only cluster members may mount; a dead peer is given up on after 5 s instead
# of freezing clients for the default 42 s.
quiet gluster volume set "$VOLUME" auth.allow "$ALLOW"
quiet gluster volume set "$VOLUME" network.ping-timeout 5
quiet gluster volume set "$VOLUME" cluster.quorum-type auto
if ! gluster volume info "$VOLUME" | grep -q '^Status: Started'; then
	quiet gluster volume start "$VOLUME"
fi
log "volume $VOLUME started on ${peers[*]}"
