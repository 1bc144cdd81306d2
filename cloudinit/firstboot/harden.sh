#!/bin/bash
# do-ha-stack first-boot hardening, run by cloud-init's runcmd after packages and
# deferred files are in place. Idempotent: a second run changes nothing, and it
# never re-takes the rkhunter baseline (that would hide tampering).
set -euo pipefail

# shellcheck source=/dev/null
. /etc/do-ha-stack/node.env

log() { printf 'do-ha-harden: %s\n' "$*"; }

apply_sysctls() {
	# Kernel-wide keys cannot be set inside a container (the lab); report, go on.
	if ! sysctl -q -e -p /etc/sysctl.d/90-do-ha-stack.conf >/dev/null 2>/tmp/do-ha-sysctl.err; then
		log "some sysctls were refused: $(tr '\n' ' ' </tmp/do-ha-sysctl.err)"
	fi
	rm -f /tmp/do-ha-sysctl.err
}

configure_ufw() {
	local cidr port range
	ufw default deny incoming
	ufw default allow outgoing
	ufw default deny routed
	# SSH first, rate limited, so enabling the firewall never cuts us off.
	for cidr in $SSH_CIDRS; do
		ufw limit proto tcp from "$cidr" to any port 22 comment 'ssh (rate limited)'
	done
	for port in $PUBLIC_PORTS; do
		ufw allow "$port/tcp" comment 'public'
	done
	for range in $CLUSTER_TCP; do
		ufw allow proto tcp from "$VPC_RANGE" to any port "$range" comment 'cluster'
	done
	for range in $CLUSTER_UDP; do
		ufw allow proto udp from "$VPC_RANGE" to any port "$range" comment 'cluster'
	done
	ufw logging low
	ufw --force enable
}

configure_rkhunter() {
	# Debian's daily cron job does the scan (report to root); no signature updates
	# from the web, and apt refreshes the baseline after upgrades.
	sed -i -e 's/^CRON_DAILY_RUN=.*/CRON_DAILY_RUN="true"/' \
		-e 's/^CRON_DB_UPDATE=.*/CRON_DB_UPDATE="false"/' \
		-e 's/^APT_AUTOGEN=.*/APT_AUTOGEN="true"/' /etc/default/rkhunter
	# The package's own postinst already wrote a baseline, before the deploy user
	# and the other packages existed: take ours once, after everything is in place.
	if [ ! -e /var/lib/do-ha-stack/rkhunter-baseline ]; then
		log "taking the rkhunter baseline"
		rkhunter --propupd --nocolors >/dev/null
		# The user and group snapshots are only written by a check: record them
		# now (deploy, gluster, ... are expected), so the first daily scan is clean.
		rkhunter --check --skip-keypress --nocolors --enable passwd_changes,group_changes >/dev/null || true
		mkdir -p /var/lib/do-ha-stack
		date -u +%FT%TZ >/var/lib/do-ha-stack/rkhunter-baseline
	fi
}

set_login_def() {
	if grep -q "^$1[[:space:]]" /etc/login.defs; then
		sed -i "s/^$1[[:space:]].*/$1\t$2/" /etc/login.defs
	else
		printf '%s\t%s\n' "$1" "$2" >>/etc/login.defs
	fi
}

harden_accounts_and_files() {
	# New files private to their owner by default; password ageing and hashing
	# rounds for any password ever set (values and why: infra/tuning.py).
	set_login_def UMASK "$LOGIN_UMASK"
	set_login_def PASS_MAX_DAYS "$PASS_MAX_DAYS"
	set_login_def PASS_MIN_DAYS "$PASS_MIN_DAYS"
	set_login_def SHA_CRYPT_MIN_ROUNDS "$SHA_CRYPT_MIN_ROUNDS"
	# Scheduled jobs and sshd's configuration readable by root only.
	chmod 0600 /etc/crontab /etc/ssh/sshd_config
	chmod 0700 /etc/cron.d /etc/cron.daily /etc/cron.hourly /etc/cron.weekly /etc/cron.monthly
	if [ -f /etc/default/sysstat ]; then
		sed -i 's/^ENABLED=.*/ENABLED="true"/' /etc/default/sysstat
	fi
	# debsums: weekly check of installed files against their packages.
	if [ -f /etc/default/debsums ]; then
		sed -i 's/^CRON_CHECK=.*/CRON_CHECK=weekly/' /etc/default/debsums
	fi
}

main() {
	apply_sysctls
	harden_accounts_and_files
	configure_ufw
	configure_rkhunter
	systemctl daemon-reload
	# logwatch: our timer writes the daily report to /var/log/logwatch; Debian's
	# cron job would mail the same report, so it is switched off (run-parts skips it).
	if [ -f /etc/cron.daily/00logwatch ]; then chmod a-x /etc/cron.daily/00logwatch; fi
	systemctl enable --now fail2ban.service unattended-upgrades.service do-ha-logwatch.timer sysstat.service
	systemctl restart fail2ban.service
	# chrony is skipped by its own unit condition where time cannot be set (lab).
	systemctl enable --now chrony.service || log "chrony did not start"
	sshd -t
	systemctl reload-or-restart ssh.service
	mkdir -p /var/lib/do-ha-stack
	date -u +%FT%TZ >/var/lib/do-ha-stack/hardened
	log "done"
}

main "$@"
