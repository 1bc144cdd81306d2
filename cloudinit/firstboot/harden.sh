#!/bin/bash
# do-ha-stack first-boot hardening, run by cloud-init's runcmd after packages and
# deferred files are in place. Idempotent: a second run changes nothing, and it
# never re-takes the rkhunter or AIDE baseline (that would hide tampering).
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

# ssh_rate_limit FILE CHAIN SRCMASK: a per-source limit on new SSH connections in one
# of ufw's before-rules files (ufw loads them ahead of its own rules). A token bucket
# (hashlimit): SSH_RATE_BURST connections at once, then SSH_RATE_PER_MINUTE; refused
# attempts take nothing from the bucket, so a client that retries gets in as soon as
# a token is back. ufw's own `limit` (6 per 30 s) counts refused attempts too and
# locks out a deploy that runs its commands at once. Brute force stays pointless:
# keys only, fail2ban bans a source after 5 failed logins, sshd's PerSourcePenalties
# and MaxStartups throttle pre-authentication abuse, and the long-run rate is
# ufw limit's. Values and why: infra/tuning.py. Our lines carry "do-ha-ssh", so a
# second run replaces them.
ssh_rate_limit() {
	local file=$1 chain=$2 srcmask=$3 tmp
	[ -f "$file" ] || return 0
	tmp=$(mktemp)
	awk -v chain="$chain" -v srcmask="$srcmask" -v burst="$SSH_RATE_BURST" \
		-v rate="$SSH_RATE_PER_MINUTE" -v forget="$SSH_RATE_FORGET_MS" '
		/do-ha-ssh/ { next }
		/^# End required lines$/ { print ":do-ha-ssh-limit - [0:0]" }
		/^COMMIT$/ && !done {
			print "# do-ha-ssh: per-source rate limit on new SSH connections (do-ha-harden)"
			printf "-A %s -p tcp --dport 22 -m conntrack --ctstate NEW -m hashlimit --hashlimit-name do-ha-ssh", chain
			printf " --hashlimit-mode srcip --hashlimit-srcmask %s --hashlimit-above %s/minute", srcmask, rate
			printf " --hashlimit-burst %s --hashlimit-htable-expire %s -j do-ha-ssh-limit\n", burst, forget
			print "-A do-ha-ssh-limit -m limit --limit 3/minute -j LOG --log-prefix \"[UFW LIMIT BLOCK] \""
			print "-A do-ha-ssh-limit -p tcp -j REJECT --reject-with tcp-reset"
			done = 1
		}
		{ print }' "$file" >"$tmp"
	cat "$tmp" >"$file"
	rm -f "$tmp"
}

configure_ufw() {
	local cidr port range
	ufw default deny incoming
	ufw default allow outgoing
	ufw default deny routed
	# SSH first, so enabling the firewall never cuts us off; rate limited per
	# source (IPv6: per /64, what one client usually holds) by ssh_rate_limit.
	ssh_rate_limit /etc/ufw/before.rules ufw-before-input 32
	ssh_rate_limit /etc/ufw/before6.rules ufw6-before-input 64
	for cidr in $SSH_CIDRS; do
		ufw allow proto tcp from "$cidr" to any port 22 comment 'ssh (rate limited)'
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
	# ufw applies its own sysctl file whenever it starts (every boot, after ours),
	# and that one turns log_martians off again: it applies ours instead.
	sed -i 's|^IPT_SYSCTL=.*|IPT_SYSCTL=/etc/sysctl.d/90-do-ha-stack.conf|' /etc/default/ufw
	ufw --force enable
}

configure_rkhunter() {
	# Debian's daily cron job does the scan (report to root); no signature updates
	# from the web, and apt refreshes the baseline after upgrades.
	sed -i -e 's/^CRON_DAILY_RUN=.*/CRON_DAILY_RUN="true"/' \
		-e 's/^CRON_DB_UPDATE=.*/CRON_DB_UPDATE="false"/' \
		-e 's/^APT_AUTOGEN=.*/APT_AUTOGEN="true"/' /etc/default/rkhunter
}

# take_rkhunter_baseline: rkhunter's baseline, once. The package's own postinst
# already wrote one, before the deploy user and the other packages existed; ours is
# taken after every package is installed, by do-ha-rkhunter-baseline.service, which
# main starts last and does not wait for: nothing in the bootstrap needs it, and the
# bootstrap changes none of the files it records (system binaries). Never taken
# again: a new baseline would hide tampering.
take_rkhunter_baseline() {
	[ ! -e /var/lib/do-ha-stack/rkhunter-baseline ] || return 0
	# Only on CPU nothing else wants. The kernel schedules each session (every
	# service is one) as a group of its own, so a process's nice or idle policy
	# (the unit's) does not reach past its group: lower the group's own.
	echo 19 >/proc/self/autogroup 2>/dev/null || true
	log "taking the rkhunter baseline"
	rkhunter --propupd --nocolors >/dev/null
	# The user and group snapshots are only written by a check: record them
	# now (deploy, gluster, ... are expected), so the first daily scan is clean.
	# A step that adds a user (web-node) holds the same lock while it does.
	flock /run/lock/do-ha-stack-users \
		rkhunter --check --skip-keypress --nocolors --enable passwd_changes,group_changes >/dev/null || true
	mkdir -p /var/lib/do-ha-stack
	date -u +%FT%TZ >/var/lib/do-ha-stack/rkhunter-baseline
	log "rkhunter baseline taken"
}

configure_aide() {
	# SHA-512 alone: as strong as AIDE's default (every hash it knows) for a
	# fraction of the CPU at each daily check (Debian's dailyaidecheck.timer).
	sed -i 's/^Checksums[[:space:]]*=.*/Checksums = sha512/' /etc/aide/aide.conf
	systemctl enable dailyaidecheck.timer
}

# take_aide_baseline: AIDE's database, once, after every package is installed, by
# do-ha-aide-baseline.service on idle CPU and disk (as rkhunter's). Never taken
# again here: after an upgrade the daily report lists what changed, and renewing
# the database (aideinit) is the admin's call once it has been read.
take_aide_baseline() {
	[ ! -e /var/lib/do-ha-stack/aide-baseline ] || return 0
	echo 19 >/proc/self/autogroup 2>/dev/null || true
	log "taking the AIDE baseline"
	aideinit --yes --force >/dev/null
	mkdir -p /var/lib/do-ha-stack
	date -u +%FT%TZ >/var/lib/do-ha-stack/aide-baseline
	log "AIDE baseline taken"
}

configure_debsecan() {
	# Daily, from Debian's security tracker: which installed packages have known
	# vulnerabilities and whether a fix exists (mailed to root).
	local suite
	suite=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)
	printf 'REPORT="true"\nSUITE="%s"\n' "$suite" | debsecan --update-config
	[ -r /etc/cron.d/debsecan ] || debsecan-create-cron
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
	case "${1:-}" in
	rkhunter-baseline)
		take_rkhunter_baseline
		return
		;;
	aide-baseline)
		take_aide_baseline
		return
		;;
	esac
	apply_sysctls
	harden_accounts_and_files
	configure_ufw
	configure_rkhunter
	configure_aide
	configure_debsecan
	systemctl daemon-reload
	# logwatch: our timer writes the daily report to /var/log/logwatch; Debian's
	# cron job would mail the same report, so it is switched off (run-parts skips it).
	if [ -f /etc/cron.daily/00logwatch ]; then chmod a-x /etc/cron.daily/00logwatch; fi
	systemctl enable --now fail2ban.service unattended-upgrades.service do-ha-logwatch.timer sysstat.service \
		do-ha-hidepid.service
	systemctl restart fail2ban.service
	# chrony is skipped by its own unit condition where time cannot be set (lab).
	systemctl enable --now chrony.service || log "chrony did not start"
	sshd -t
	systemctl reload-or-restart ssh.service
	systemctl start --no-block do-ha-rkhunter-baseline.service do-ha-aide-baseline.service
	mkdir -p /var/lib/do-ha-stack
	date -u +%FT%TZ >/var/lib/do-ha-stack/hardened
	log "done"
}

main "$@"
