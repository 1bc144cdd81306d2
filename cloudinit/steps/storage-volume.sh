#!/bin/bash
# Create the replicated GlusterFS volume, or converge an existing one to the
# declared peers and bricks: a brick whose node was replaced (same place in the
# replica set, new address) moves to the new node and is healed from the others;
# new peers are probed (an app node beyond the brick holders mounts the volume
# without a brick); peers the program no longer declares are detached.
# Runs on the control node (setting controlNode); any pool member can.
# Arguments (tuning values and why: infra/tuning.py):
#   VOLUME           the volume's name
#   BRICK_DIR        where each peer keeps its brick
#   ARBITER          yes: the last peer holds an arbiter brick; no: plain replica 2
#   ALLOW            addresses allowed to mount, comma separated
#   TLS_ALLOW        the names (certificate CNs) of the nodes whose clients the
#                    bricks admit over TLS, comma separated
#   PEERS            every peer's private address (every node), space separated
#   BRICKS           the addresses of the peers holding a brick, in brick order:
#                    the data bricks, then the arbiter's
#   PING_TIMEOUT_S   network.ping-timeout
#   QUORUM_TYPE      cluster.quorum-type
#   PROBE_TIMEOUT_S  bound on one peer probe
#   HEAL_WAIT_S      how long the volume has to heal (nothing left to heal)
#   HEAL_NUDGE_S     a heal without progress this long is asked for again
set -euo pipefail
step_args VOLUME BRICK_DIR ARBITER ALLOW TLS_ALLOW PEERS BRICKS PING_TIMEOUT_S QUORUM_TYPE PROBE_TIMEOUT_S HEAL_WAIT_S HEAL_NUDGE_S -- "$@"
read -ra peer_ips <<<"$PEERS"
read -ra brick_ips <<<"$BRICKS"
read_bundle

# glusterd runs one volume operation at a time, pool-wide: a command that meets
# another (an app node's gluster-reconnect asking for `volume status`, an operator)
# is refused ("Another transaction is in progress", "Locking failed") and is tried
# again here for up to 10 s. Its output: stdout on success, stderr on failure.
gluster() {
	local out rc tries=0
	while :; do
		rc=0
		out=$(command gluster "$@" 2>&1) || rc=$?
		if [ "$rc" -eq 0 ] || ! grep -qE 'Another transaction is in progress|[Ll]ocking failed' <<<"$out" ||
			[ "$((tries += 1))" -ge 20 ]; then
			break
		fi
		sleep 0.5
	done
	if [ -n "$out" ] && [ "$rc" -eq 0 ]; then
		printf '%s\n' "$out"
	elif [ -n "$out" ]; then
		printf '%s\n' "$out" >&2
	fi
	return "$rc"
}

self=$(hostname -I)
# A pool peer's address. Peers are known by address (cluster-node makes each
# address its own canonical name), but a pool formed before that knows the node
# that probed first by its node name.
addr_of() {
	case $1 in
	*[!0-9.]*) { getent ahostsv4 "$1" || true; } | awk 'NR == 1 { print $1 }' ;;
	*) printf '%s\n' "$1" ;;
	esac
}
# "HOST STATE" lines (stdin) as "ADDRESS STATE"; a name that no longer
# resolves stays a name.
by_address() {
	local host state addr
	while read -r host state; do
		addr=$(addr_of "$host")
		printf '%s %s\n' "${addr:-$host}" "$state"
	done
}
# The peers in `gluster pool list` output (stdin), "localhost" (this node) left out.
pool() { tail -n +2 | awk '$2 != "localhost" { print $2, $3 }' | by_address; }
for ip in "${peer_ips[@]}"; do
	case " $self " in *" $ip "*) continue ;; esac
	# Probe only new peers; the CLI can hang on a peer it already knows.
	# (Output captured first: a failing CLI stops the step, and with pipefail
	# grep -q quitting early could fail a pipe.)
	list=$(gluster pool list)
	known=$(pool <<<"$list")
	grep -q "^${ip} " <<<"$known" || quiet gluster --timeout="$PROBE_TIMEOUT_S" peer probe "$ip"
done
# A probed peer is usable (it can take a brick) once it is "Peer in Cluster"
# and connected; "Connected" alone shows while the handshake still runs.
connected() {
	local ip status
	status=$(gluster peer status | awk '/^Hostname:/ { host = $2 } /^State:/ { sub(/^State: /, ""); print host, $0 }' |
		by_address)
	for ip in "${peer_ips[@]}"; do
		case " $self " in *" $ip "*) continue ;; esac
		grep -q "^${ip} Peer in Cluster (Connected)" <<<"$status" || return 1
	done
}
wait_for "all ${#peer_ips[@]} gluster peers connected" 120 connected

if ! gluster volume info "$VOLUME" >/dev/null 2>&1; then
	# A fresh node (the control node replaced without moving controlNode first)
	# must not create a second volume beside the one its peers serve.
	for ip in "${peer_ips[@]}"; do
		case " $self " in *" $ip "*) continue ;; esac
		if timeout "$PROBE_TIMEOUT_S" gluster --remote-host="$ip" volume info "$VOLUME" >/dev/null 2>&1; then
			die "peer $ip already serves volume $VOLUME but this node does not see it: run this step from a member of its pool (set controlNode to one)"
		fi
	done
	new_bricks=()
	for ip in "${brick_ips[@]}"; do new_bricks+=("$ip:$BRICK_DIR"); done
	if [ "$ARBITER" = yes ]; then
		layout=(replica 3 arbiter 1)
	else
		log "warning: replica 2 without an arbiter can split-brain; add a witness node"
		layout=(replica 2)
	fi
	log "creating volume $VOLUME: ${layout[*]} ${new_bricks[*]}"
	# force: the bricks live on the droplets' root filesystem.
	quiet gluster --mode=script volume create "$VOLUME" "${layout[@]}" "${new_bricks[@]}" force
else
	# Brick N belongs to peer N (the arbiter's is last): a brick elsewhere is a
	# replaced node's, and moves to the declared peer.
	mapfile -t have < <(gluster volume info "$VOLUME" | sed -n 's/^Brick[0-9]*:[[:space:]]*\([^[:space:]]*\).*/\1/p')
	if [ "${#have[@]}" -ne "${#brick_ips[@]}" ]; then
		die "volume $VOLUME has ${#have[@]} bricks, the program declares ${#brick_ips[@]}: adding or removing bricks is not supported"
	fi
	moves=()
	for i in "${!have[@]}"; do
		[ "${have[i]}" = "${brick_ips[i]}:$BRICK_DIR" ] || moves+=("$i")
	done
	# Two bricks moved at once would leave one copy (or none) to heal from.
	[ "${#moves[@]}" -le 1 ] || die "refusing to replace ${#moves[@]} bricks of $VOLUME in one run: replace one node at a time"
	for i in "${moves[@]}"; do
		log "moving brick ${have[i]} to ${brick_ips[i]}:$BRICK_DIR"
		quiet gluster --mode=script volume replace-brick "$VOLUME" "${have[i]}" "${brick_ips[i]}:$BRICK_DIR" commit force
	done
fi

# Peers that hold no brick and are not declared (a replaced node's old address).
list=$(gluster pool list)
while read -r host _; do
	case " ${peer_ips[*]} " in *" $host "*) continue ;; esac
	if [[ "$host" = *[!0-9.]* ]]; then
		log "warning: peer $host is known by a name that no longer resolves; left in the pool"
		continue
	fi
	if grep -q "^Brick[0-9]*:[[:space:]]*${host}:" <<<"$(gluster volume info)"; then
		log "warning: peer $host is not declared but still holds a brick; left in the pool"
		continue
	fi
	log "detaching former peer $host"
	# A peer that is gone for good may need force (it cannot confirm).
	gluster --mode=script peer detach "$host" >/dev/null 2>&1 || quiet gluster --mode=script peer detach "$host" force
done < <(pool <<<"$list")

# Only cluster members may mount.
quiet gluster volume set "$VOLUME" auth.allow "$ALLOW"
quiet gluster volume set "$VOLUME" network.ping-timeout "$PING_TIMEOUT_S"
quiet gluster volume set "$VOLUME" cluster.quorum-type "$QUORUM_TYPE"
# I/O over TLS, bricks admitting the members' certificates only (by name; the
# storage CA issues no others). A started volume takes TLS at its next start: a
# volume that ran plain (a stack from before TLS) is stopped and started once,
# which cuts its mounts off until storage-mount mounts them again (seconds).
option() { gluster volume get "$VOLUME" "$1" | awk -v o="$1" '$1 == o { print $2 }'; }
was_tls=$(option server.ssl)
quiet gluster volume set "$VOLUME" auth.ssl-allow "$TLS_ALLOW"
quiet gluster volume set "$VOLUME" client.ssl on
quiet gluster volume set "$VOLUME" server.ssl on
if ! grep -q '^Status: Started' <<<"$(gluster volume info "$VOLUME")"; then
	quiet gluster volume start "$VOLUME"
elif [ "$was_tls" != on ]; then
	log "restarting volume $VOLUME to move its I/O to TLS"
	quiet gluster --mode=script volume stop "$VOLUME"
	quiet gluster volume start "$VOLUME"
fi

# Nothing left to heal: every brick connected and no entry pending on any (a
# moved brick is filled from the others by the self-heal daemons; the step asks
# them to start now). A heal that stalls is kept going as an operator would:
# bricks not connected are started again (start force starts only what is not
# running) and the heal is asked for again, its answer logged. GlusterFS 11.1's
# self-heal daemon can stay cut off from a brick (one that came back on another
# port, or moved to a new node) and then refuses every heal ("brick op 'Heal'
# failed"): this node's daemon, which holds a source brick's index, is then
# restarted, once (again would start a long heal of a big file over).
heal_state() {
	local info up
	info=$(gluster volume heal "$VOLUME" info 2>&1) || true
	if ! grep -q '^Brick ' <<<"$info"; then  # glusterd not answering: state unknown
		heal_error=${info//$'\n'/ } heal_pending=unknown heal_down=unknown
		return 1
	fi
	up=$(grep -c '^Status: Connected' <<<"$info" || true)
	heal_error="" heal_down=$((${#brick_ips[@]} > up ? ${#brick_ips[@]} - up : 0))
	heal_pending=$(awk '/^Number of entries:/ && $4 ~ /^[0-9]+$/ { n += $4 } END { print n + 0 }' <<<"$info")
	[ "$heal_down" -eq 0 ] && [ "$heal_pending" -eq 0 ]
}
heal_backlog() { printf '%s' "${heal_error:-$heal_pending entries pending, $heal_down bricks not connected}"; }
# ask_heal: 0 if the request was taken; the refusal is in $refusal.
ask_heal() {
	refusal=$(gluster volume heal "$VOLUME" 2>&1) && return 0
	refusal=${refusal//$'\n'/ }
	log "heal request refused: $refusal"
	return 1
}
SHD_PIDFILE=/run/gluster/shd/$VOLUME/$VOLUME-shd.pid
gone() { ! kill -0 "$1" 2>/dev/null; }
restart_heal_daemon() {
	local pid i
	pid=$(cat "$SHD_PIDFILE" 2>/dev/null || true)
	# Only the daemon that wrote the pidfile: a stale pid may be another process's now.
	if [[ "$pid" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$VOLUME-shd.pid"; then
		log "restarting this node's self-heal daemon (pid $pid)"
		kill "$pid" 2>/dev/null || true
		for ((i = 0; i < 20; i++)); do
			gone "$pid" && break
			sleep 0.5
		done
		gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
	else
		log "this node's self-heal daemon is not running: starting it"
	fi
	quiet gluster volume start "$VOLUME" force || true
}
if ! heal_state; then
	log "healing $VOLUME ($(heal_backlog))"
	ask_heal || true
	deadline=$((SECONDS + HEAL_WAIT_S)) fewest="" since=$SECONDS restarted=no
	until heal_state; do
		if [ "$SECONDS" -ge "$deadline" ]; then
			gluster volume status "$VOLUME" >&2 || true
			die "timed out after ${HEAL_WAIT_S}s waiting for $VOLUME to heal: $(heal_backlog) (gluster volume heal $VOLUME info, gluster volume status $VOLUME)"
		fi
		if [ -n "$heal_error" ]; then
			since=$SECONDS  # nothing to judge progress by: wait for glusterd
		elif [ -z "$fewest" ] || [ "$heal_pending" -lt "$fewest" ]; then
			fewest=$heal_pending since=$SECONDS
		elif [ $((SECONDS - since)) -ge "$HEAL_NUDGE_S" ]; then
			if [ "$heal_down" -gt 0 ]; then
				log "$heal_down bricks of $VOLUME not connected: starting the ones not running"
				quiet gluster volume start "$VOLUME" force || true
			fi
			log "no heal progress in ${HEAL_NUDGE_S}s ($heal_pending entries pending): asking again"
			if ! ask_heal && [ "$restarted" = no ] && [[ "$refusal" == *"brick op 'Heal' failed"* ]]; then
				restart_heal_daemon
				restarted=yes
				ask_heal || true
			fi
			since=$SECONDS
		fi
		sleep 1
	done
fi
log "volume $VOLUME started on ${brick_ips[*]} (pool: ${peer_ips[*]}), nothing to heal"
