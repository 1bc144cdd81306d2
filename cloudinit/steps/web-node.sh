#!/bin/bash
# The web tier on an app node: nginx's site, the canary write endpoint, and
# nginx handed to pacemaker (it runs on every app node whose web tier is handed
# over; the reserved IP picks the active one).
# Arguments:
#   DOCUMENT_ROOT  nginx's document root, on the shared volume
#   TLS            where the site's certificate comes from: supplied (in the bundle),
#                  acme (site-cert obtains it; until this node has it, nginx serves
#                  the plain site, which answers the CA's checks) or none (HTTP only:
#                  a certificate and key left from an earlier HTTPS site are removed)
#   DOMAIN         the site's name (- without HTTPS)
# Bundle: files: the canary service and its settings, the nginx site and its
# includes (the trusted ranges; the canary token, root-only; with HTTPS the
# site's name and either its certificate chain and key, root-only, or site-cert,
# its settings and timers).
set -euo pipefail
step_args DOCUMENT_ROOT TLS DOMAIN -- "$@"
tls_dir=/etc/nginx/do-ha-stack/tls
acme_timers=(do-ha-site-cert-renew.timer do-ha-site-cert-sync.timer)
if [ "$TLS" != acme ]; then
	# Renewals stop, and before the bundle lands: a sync (which holds this lock
	# while it installs) must not overwrite a supplied certificate with the
	# stack's last ACME one.
	exec 8>/run/lock/do-ha-site-cert
	flock 8
	systemctl disable --now "${acme_timers[@]}" >/dev/null 2>&1 || true
	systemctl stop do-ha-site-cert-sync.service do-ha-site-cert-renew.service >/dev/null 2>&1 || true
fi
read_bundle

if [ "$TLS" != acme ]; then
	rm -f /etc/systemd/system/do-ha-site-cert-* /usr/local/lib/do-ha-stack/site-cert \
		/etc/do-ha-stack/site-cert.env /etc/do-ha-stack/acme-server-ca.pem \
		/etc/nginx/sites-available/do-ha-stack-plain
	ln -sfn /etc/nginx/sites-available/do-ha-stack /etc/nginx/sites-enabled/do-ha-stack
fi
case "$TLS" in
supplied) [ -s "$tls_dir/site.key" ] || die "TLS is supplied but no key came in the bundle" ;;
none) rm -rf "$tls_dir" /etc/nginx/do-ha-stack/server-name.conf ;;
acme)
	# Nodes made before certbot was in the first-boot packages get it now.
	if ! command -v certbot >/dev/null; then
		DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -q -o DPkg::Lock::Timeout=300 \
			--no-install-recommends certbot
	fi
	# The stack's certificate if the shared volume has a valid one for this domain
	# (a new node, a running stack), and the site to match: HTTPS with it, plain
	# until site-certificate obtains it.
	/usr/local/lib/do-ha-stack/site-cert install
	;;
*) die "TLS must be supplied, acme or none, not '$TLS'" ;;
esac

install -d -m 0755 "$DOCUMENT_ROOT"

# The canary talks to the local MariaDB as its own system user (unix_socket).
# rkhunter compares users and groups with its first-boot copies (in its TMPDIR):
# a user added on purpose goes into them too, so the daily scan stays clean. The
# first-boot baseline may be taking those copies right now (in the background, see
# do-ha-harden); it holds the same lock while it does, so the copies get the user
# either way.
if ! id -u do-ha-canary >/dev/null 2>&1; then
	(
		flock 9
		useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin do-ha-canary
		if [ -f /var/lib/rkhunter/tmp/passwd ]; then
			cp -p /etc/passwd /etc/group /var/lib/rkhunter/tmp/
			chmod 0600 /var/lib/rkhunter/tmp/passwd /var/lib/rkhunter/tmp/group
		fi
	) 9>/run/lock/do-ha-stack-users
fi
rm -f /etc/nginx/sites-enabled/default
systemctl daemon-reload
systemctl enable do-ha-canary.service >/dev/null 2>&1
if [ "$TLS" = acme ]; then systemctl enable --now "${acme_timers[@]}" >/dev/null 2>&1; fi
if changed /usr/local/lib/do-ha-stack/canary.py || changed /etc/do-ha-stack/canary.env ||
	changed /etc/systemd/system/do-ha-canary.service || ! systemctl is-active --quiet do-ha-canary.service; then
	systemctl restart do-ha-canary.service
fi
nginx -t -q

# From now on pacemaker runs nginx. Until it does here, nginx must not run: a node
# joining a running cluster comes with the package's nginx started, which
# pacemaker would find running where it did not start it (see cluster-resources.sh
# for when it starts looking).
systemctl disable nginx.service >/dev/null 2>&1
runs_web_here() {
	local me
	me=$(crm_node -n 2>/dev/null) || return 1
	grep -qx "resource web is running on: $me" <<<"$(crm_resource --resource web --locate 2>/dev/null || true)"
}
if managed_by_pacemaker web && runs_web_here; then
	if systemctl is-active --quiet nginx.service; then
		systemctl reload nginx.service
	fi
	log "site updated; pacemaker runs nginx here"
else
	systemctl stop nginx.service
	log "site installed; nginx is left to pacemaker"
fi
