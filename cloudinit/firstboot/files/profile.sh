# shellcheck shell=sh
# do-ha-stack, for login shells: no core dumps, and an idle interactive shell
# ends after 15 minutes (an admin's forgotten session on a cluster node).
# dash and bash, the shells that read this, both have ulimit -c.
# shellcheck disable=SC3045
ulimit -c 0 2>/dev/null
if [ "${TMOUT:-}" != 900 ]; then
	TMOUT=900
	readonly TMOUT
	export TMOUT
fi
