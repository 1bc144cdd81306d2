#!/bin/bash
# The site's ACME certificate (TLS=acme): once the reserved IP reaches the web
# tier, the control node obtains it (ACTION=obtain, through the shared webroot
# every app node serves), then every app node installs it (ACTION=install).
# Renewals are site-cert's timers' job (web-node installs them).
# Arguments:
#   ACTION   obtain or install
#   DOMAIN   the site's name: web-node must have written site-cert's settings for it
#   SERVER, EMAIL  the ACME directory and the account's address (in the settings
#            too; here so that a change of either obtains again)
set -euo pipefail
step_args ACTION DOMAIN SERVER EMAIL -- "$@"
read_bundle

settings=/etc/do-ha-stack/site-cert.env
grep -qxF "DOMAIN=$DOMAIN" "$settings" 2>/dev/null || die "$settings is not for $DOMAIN (web-node runs first)"
case "$ACTION" in
obtain | install) ;;
*) die "ACTION must be obtain or install, not '$ACTION'" ;;
esac
if ! out=$(/usr/local/lib/do-ha-stack/site-cert "$ACTION" 2>&1); then
	die "site-cert $ACTION failed: $out"
fi
[ -z "$out" ] || log "$out"
if [ "$ACTION" = install ]; then
	# This node serves the stack's certificate: the one on the shared volume.
	shared=/srv/shared/tls/letsencrypt/live/$DOMAIN/fullchain.pem
	cmp -s /etc/nginx/do-ha-stack/tls/site.pem "$shared" ||
		die "this node does not hold the stack's certificate for $DOMAIN ($shared)"
	[ "$(readlink /etc/nginx/sites-enabled/do-ha-stack)" = /etc/nginx/sites-available/do-ha-stack ] ||
		die "nginx's HTTPS site is not enabled"
	log "serving $(openssl x509 -noout -issuer -enddate -in /etc/nginx/do-ha-stack/tls/site.pem | tr '\n' ' ')"
fi
