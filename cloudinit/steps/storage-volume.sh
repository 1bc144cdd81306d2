#!/bin/bash
# Create the replicated GlusterFS volume once; re-runs only re-apply its options.
# Runs on the bootstrap node.
# Arguments (tuning values and why: infra/tuning.py):
#   VOLUME           the volume's name
#   BRICK_DIR        where each peer keeps its brick
#   ARBITER          yes: the last peer holds an arbiter brick; no: plain replica 2
#   ALLOW            addresses allowed to mount, comma separated
#   PEERS            the peers' private addresses, space separated, app nodes
#                    first, the arbiter's last
#   PING_TIMEOUT_S   network.ping-timeout
#   QUORUM_TYPE      cluster.quorum-type
#   PROBE_TIMEOUT_S  bound on one peer probe
set -euo pipefail
step_args VOLUME BRICK_DIR ARBITER ALLOW PEERS PING_TIMEOUT_S QUORUM_TYPE PROBE_TIMEOUT_S -- "$@"
read -ra peer_ips <<<"$PEERS"
read_bundle

self=$(hostname -I)
for ip in "${peer_ips[@]}"; do
	case " $self " in *" $ip "*) continue ;; esac
	# Probe only new peers; the CLI can hang on a peer it already knows.
	gluster pool list | grep -q "[[:space:]]${ip}[[:space:]]" || quiet gluster --timeout="$PROBE_TIMEOUT_S" peer probe "$ip"
done
connected() {
	[ "$(gluster pool list | grep -c 'Connected')" -ge "${#peer_ips[@]}" ]
}
wait_for "all ${#peer_ips[@]} gluster peers connected" 120 connected

if ! gluster volume info "$VOLUME" >/dev/null 2>&1; then
	bricks=()
	for ip in "${peer_ips[@]}"; do bricks+=("$ip:$BRICK_DIR"); done
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

# Only cluster members may mount.
quiet gluster volume set "$VOLUME" auth.allow "$ALLOW"
quiet gluster volume set "$VOLUME" network.ping-timeout "$PING_TIMEOUT_S"
quiet gluster volume set "$VOLUME" cluster.quorum-type "$QUORUM_TYPE"
if ! gluster volume info "$VOLUME" | grep -q '^Status: Started'; then
	quiet gluster volume start "$VOLUME"
fi
log "volume $VOLUME started on ${peer_ips[*]}"
