#!/bin/bash
# Who may log in, kept in line with the config on a running node: the deploy
# user's authorized_keys (the admins' keys and the automation's), the sources ufw
# lets reach SSH, and the sources fail2ban never bans. First boot set the first
# two from user-data, which never reaches a running droplet again; this step
# carries every later change (a key removed, a range added) without a new droplet.
# Arguments:
#   DEPLOY_USER  the deploy user (authorized_keys is its own)
#   SSH_CIDRS    the sources allowed to reach SSH, space separated
#   NEVER_BAN    sources fail2ban never bans besides localhost, space separated, or -
# Bundle: files: the deploy user's authorized_keys.
set -euo pipefail
step_args DEPLOY_USER SSH_CIDRS NEVER_BAN -- "$@"
read_bundle
home=$(getent passwd "$DEPLOY_USER" | cut -d: -f6)
[ -s "$home/.ssh/authorized_keys" ] || die "$home/.ssh/authorized_keys is missing or empty"
if changed "$home/.ssh/authorized_keys"; then
	log "authorized_keys of $DEPLOY_USER updated ($(grep -c . "$home/.ssh/authorized_keys") keys)"
fi

# ufw: the SSH rules harden.sh made at first boot carry this comment. New ranges
# are allowed before old ones go (an open session survives either way: ufw keeps
# established connections).
# `ufw show added` lists them as "ufw allow from SOURCE to any port 22 proto tcp
# comment '...'", a single address without its /32 or /128.
comment='ssh (rate limited)'
allowed=$(ufw show added | sed -n "s|^ufw allow from \([^ ]*\) to any port 22 proto tcp comment '$comment'\$|\1|p" |
	sed -e '/\//!{/:/s|$|/128|;/:/!s|$|/32|}')
for cidr in $SSH_CIDRS; do
	if ! grep -qxF "$cidr" <<<"$allowed"; then
		quiet ufw allow proto tcp from "$cidr" to any port 22 comment "$comment"
		log "SSH allowed from $cidr"
	fi
done
for cidr in $allowed; do
	if [[ " $SSH_CIDRS " != *" $cidr "* ]]; then
		quiet ufw delete allow proto tcp from "$cidr" to any port 22
		log "SSH no longer allowed from $cidr"
	fi
done

# fail2ban reads jail.d/*.local after jail.local (first boot's): this ignore list wins.
ignored="127.0.0.1/8 ::1"
[ "$NEVER_BAN" = - ] || ignored+=" $NEVER_BAN"
put_file 0644 root:root /etc/fail2ban/jail.d/do-ha-stack-never-ban.local \
	< <(printf '# do-ha-stack node-access: sshNeverBanCidrs\n[DEFAULT]\nignoreip = %s\n' "$ignored")
if changed /etc/fail2ban/jail.d/do-ha-stack-never-ban.local; then
	quiet fail2ban-client reload
	log "fail2ban never bans: $ignored"
fi
