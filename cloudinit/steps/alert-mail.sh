#!/bin/bash
# Alerts on one node (every node, witness included): pacemaker's alert agent,
# the degraded-state watch and the sender that mails what they spool through
# the stack's relay (alertSmtpHost), or only logs it without one. A changed
# relay setting is proven by a test mail: a wrong password fails this step,
# not the night of a failover.
# Arguments:
#   MAIL  yes: mail through the relay; no: alerts go to the journal only
#         (journalctl -t do-ha-alert)
# Bundle: files /etc/do-ha-stack/alerts.conf, the alert agent, alert-send,
# health-watch and their units; with MAIL=yes also /etc/do-ha-stack/msmtprc and
# the relay's password (a secret file) when the relay takes a login.
set -euo pipefail
step_args MAIL -- "$@"
read_bundle
lib=/usr/local/lib/do-ha-stack
msmtprc=/etc/do-ha-stack/msmtprc password=/etc/do-ha-stack/alert-smtp-password

command -v msmtp >/dev/null ||
	DEBIAN_FRONTEND=noninteractive quiet apt-get install -y -q -o DPkg::Lock::Timeout=300 msmtp
# The agent runs as hacluster (group haclient) and writes here; alert-send reads as root.
install -d -m 0755 /var/spool/do-ha-stack
install -d -m 2770 -o root -g haclient /var/spool/do-ha-stack/alerts
install -d -m 0700 /var/spool/do-ha-stack/deferred  # (install -d would reset an existing directory's mode)
if [ "$MAIL" != yes ]; then
	rm -f "$msmtprc" "$password"
fi
systemctl daemon-reload
systemctl enable --now do-ha-alert-send.path do-ha-alert-retry.timer do-ha-health-watch.timer >/dev/null 2>&1
if [ "$MAIL" = yes ] && { changed "$msmtprc" || changed "$password" || changed /etc/do-ha-stack/alerts.conf ||
	[ ! -f /var/lib/do-ha-stack/alert-mail-tested ]; }; then
	"$lib/alert-send" test || die "the relay did not take a test mail (msmtp's reason: journalctl -t msmtp on $(uname -n)); check alertSmtpHost, alertSmtpPort, alertSmtpUser and alertSmtpPassword"
	touch /var/lib/do-ha-stack/alert-mail-tested
	log "alert mail on: a test mail went to the relay"
else
	log "alerts: $([ "$MAIL" = yes ] && echo "mail through the relay" || echo "journal only (no alertSmtpHost)")"
fi
