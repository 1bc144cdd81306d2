#!/bin/bash
# Prepare one node for the cluster (every node, witness included).
# Args: CLUSTER_NAME. Bundle: secrets HACLUSTER_PASSWORD, DO_API_TOKEN; the
# reserved-IP resource agent and the DigitalOcean fence agent as files.
set -euo pipefail
CLUSTER_NAME=$1

read_bundle
[ -n "${SECRET_HACLUSTER_PASSWORD:-}" ] || die "no hacluster password on stdin"
[ -n "${SECRET_DO_API_TOKEN:-}" ] || die "no DigitalOcean API token on stdin"

# The token the agents use: root only, never a CIB parameter.
install -d -m 0700 /etc/do-ha-stack
put_file 0600 root:root /etc/do-ha-stack/do-api-token <<<"$SECRET_DO_API_TOKEN"

# pcsd authenticates peers as hacluster; chpasswd reads the pair from stdin.
printf 'hacluster:%s\n' "$SECRET_HACLUSTER_PASSWORD" | chpasswd

# Debian's corosync package ships a one-node cluster of its own. Remove it, and
# nothing else: a corosync.conf naming our cluster is never touched again.
conf=/etc/corosync/corosync.conf
if [ -f "$conf" ] && ! grep -Eq "^[[:space:]]*cluster_name:[[:space:]]*$CLUSTER_NAME[[:space:]]*$" "$conf"; then
	log "removing the distribution's default cluster"
	quiet pcs cluster destroy --force
fi

# Every node runs glusterd (enabled here: Debian leaves it off) (app bricks, the witness's arbiter brick) and pcsd.
quiet systemctl enable --now pcsd.service glusterd.service
wait_for "pcsd" 60 systemctl is-active --quiet pcsd.service
wait_for "glusterd" 60 systemctl is-active --quiet glusterd.service
log "ready for cluster $CLUSTER_NAME${CHANGED[*]:+ (updated: ${CHANGED[*]})}"
