#!/bin/sh
# Run on a node by `make upgrade` (tooling/rolling_upgrade.py), as root, sent on
# stdin: Debian's updates, the cluster's held packages included. The node is in
# standby; the caller reboots it afterwards.
set -u
export DEBIAN_FRONTEND=noninteractive
# needrestart only lists: the reboot restarts everything anyway.
export NEEDRESTART_MODE=l

# A mirror that is down would leave a stale index, and the upgrade would install
# less than is out there: any index that failed to download stops it here.
out=$(apt-get update -q 2>&1)
rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne 0 ] || printf '%s\n' "$out" | grep -Eq '^(E:|W: Failed to fetch|W: Some index files failed)'; then
	echo "apt-get update failed: nothing was upgraded" >&2
	exit 3
fi
# Config files the nodes' steps manage are kept as they are (confold); a package's
# new default for an untouched file is taken (confdef).
exec apt-get -q -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold dist-upgrade
