# Shared helpers for the bootstrap steps pulumi-command runs on the nodes.
# Prepended to each step script by infra/remote.py; never run on its own.
#
# Arguments are NAME=value, each declared by the step with `step_args` (the
# program checks its names against that declaration before it renders a step).
#
# Secrets and files arrive on stdin as a bundle, one item per line:
#   secret NAME BASE64          -> shell variable SECRET_NAME (never echoed)
#   file MODE OWNER PATH BASE64 -> written atomically when the content differs
#   secretfile MODE OWNER PATH BASE64 -> the same, its content hidden like a secret's
# so nothing secret is ever part of a command line or a log.

STEP="${0##*/}"  # bash -c sets $0 to the step name
STATE_DIR=/var/lib/do-ha-stack
CHANGED=()
HIDDEN=()  # each line of every secret and secret file this step received (read_bundle)

# hide_in TEXT: TEXT with every secret of this step replaced by [secret]. Bash
# only: a secret never becomes another process's argument.
hide_in() {
	local text=$1 secret
	for secret in "${HIDDEN[@]}"; do text=${text//"$secret"/[secret]}; done
	printf '%s' "$text"
}

# hide_lines: copy stdin to stdout, hiding every secret (see read_bundle).
hide_lines() {
	local line secret
	while IFS= read -r line || [ -n "$line" ]; do
		for secret in "${HIDDEN[@]}"; do line=${line//"$secret"/[secret]}; done
		printf '%s\n' "$line"
	done
}

log() {
	local message
	message=$(hide_in "$*")
	printf '%s: %s\n' "$STEP" "$message" >&2
	logger -t "do-ha-stack" -- "$STEP: $message" 2>/dev/null || true
}

die() {
	log "error: $*"
	exit 1
}

# quiet COMMAND...: run it silently, but show its output if it fails.
quiet() {
	local out
	if ! out=$("$@" 2>&1); then
		log "'$1 ${2:-}' failed: $out"
		return 1
	fi
}

# put_file MODE OWNER PATH: stdin becomes PATH, replaced atomically, only if it differs.
put_file() {
	local mode=$1 owner=$2 path=$3 tmp dir
	# A missing directory is made 0755; an existing one keeps its mode
	# (install -d would reset a root-only 0700 one, such as /etc/do-ha-stack).
	dir=$(dirname "$path")
	[ -d "$dir" ] || install -d -m 0755 "$dir"
	tmp=$(mktemp "$path.XXXXXX")
	cat >"$tmp"
	chmod "$mode" "$tmp"
	chown "$owner" "$tmp"
	if [ -f "$path" ] && cmp -s "$tmp" "$path" &&
		[ "$(stat -c '%a %U:%G' "$path")" = "$(stat -c '%a %U:%G' "$tmp")" ]; then
		rm -f "$tmp"
		return 0
	fi
	mv -f "$tmp" "$path"
	CHANGED+=("$path")
}

# read_bundle: consume stdin (see above).
read_bundle() {
	local kind a b c d files=0
	while read -r kind a b c d; do
		case "$kind" in
		secret)
			[[ "$a" =~ ^[A-Z0-9_]+$ ]] || die "bad secret name in bundle"
			# Shell variables only: not exported, so no child process sees them.
			printf -v "SECRET_$a" '%s' "$(printf '%s' "$b" | base64 -d)"
			;;
		file) put_file "$a" "$b" "$c" < <(printf "%s" "$d" | base64 -d) ;;
		secretfile)
			put_file "$a" "$b" "$c" < <(printf "%s" "$d" | base64 -d)
			# Its content also in a shell variable (SECRET_FILE_n), hidden like a secret below.
			printf -v "SECRET_FILE_$files" '%s' "$(printf '%s' "$d" | base64 -d)"
			files=$((files + 1))
			;;
		'') ;;
		*) die "unknown bundle item '$kind'" ;;
		esac
	done
	# A failed step's output ends up in pulumi-command's error, which the engine
	# shows and logs (secret step or not): from here on, everything this step and
	# its commands print has each line of each secret replaced by [secret].
	local name rest
	for name in ${!SECRET_@}; do
		rest=${!name}
		while [ -n "$rest" ]; do
			a=${rest%%$'\n'*}
			[ "${#a}" -lt 4 ] || HIDDEN+=("$a")
			# A secret file's NAME=value line: the value alone too (quotes removed).
			if [[ "$name" == SECRET_FILE_* && "$a" == *=* ]]; then
				b=${a#*=} && b=${b#\'} && b=${b%\'}
				[ "${#b}" -lt 8 ] || HIDDEN+=("$b")
			fi
			[[ "$rest" == *$'\n'* ]] && rest=${rest#*$'\n'} || rest=
		done
	done
	if [ "${#HIDDEN[@]}" -gt 0 ]; then
		exec > >(hide_lines) 2> >(hide_lines >&2)
	fi
}

# step_args NAME... -- "$@": set each declared NAME from its NAME=value argument.
# An undeclared, repeated or missing argument stops the step before it changes anything.
step_args() {
	local -a declared=()
	local -A given=()
	local arg name
	while [ "$#" -gt 0 ] && [ "$1" != -- ]; do
		declared+=("$1")
		shift
	done
	[ "$#" -gt 0 ] || die "step_args: no '--' before the arguments"
	shift
	for arg in "$@"; do
		name=${arg%%=*}
		[[ "$arg" == *=* && "$name" =~ ^[A-Z][A-Z0-9_]*$ ]] ||
			die "argument '${arg:0:40}' is not NAME=value; this step takes: ${declared[*]}"
		[[ " ${declared[*]} " == *" $name "* ]] || die "unknown argument $name; this step takes: ${declared[*]}"
		[ -z "${given[$name]:-}" ] || die "argument $name given twice"
		given[$name]=1
		printf -v "$name" '%s' "${arg#*=}"
	done
	for name in "${declared[@]}"; do
		[ -n "${given[$name]:-}" ] || die "missing argument $name; this step takes: ${declared[*]}"
	done
}

changed() {
	local path
	for path in "${CHANGED[@]}"; do
		[ "$path" = "$1" ] && return 0
	done
	return 1
}

# sql_escape TEXT: TEXT as the inside of a single-quoted SQL string.
sql_escape() { sed -e "s/\\\\/\\\\\\\\/g" -e "s/'/\\\\'/g" <<<"$1"; }

# managed_by_pacemaker RESOURCE: pacemaker already has RESOURCE (mariadb, web) on this cluster.
managed_by_pacemaker() { crm_resource --resource "$1" --query-xml >/dev/null 2>&1; }

# wait_for DESCRIPTION SECONDS COMMAND...: poll until COMMAND succeeds, pausing
# WAIT_POLL_S between checks (set ahead of this file from infra/tuning.py: short
# pauses first, the last one repeating).
wait_for() {
	local what=$1 seconds=$2 deadline i=0
	local -a pauses
	read -ra pauses <<<"$WAIT_POLL_S"
	shift 2
	deadline=$((SECONDS + seconds))
	until "$@"; do
		[ "$SECONDS" -lt "$deadline" ] || die "timed out after ${seconds}s waiting for $what"
		sleep "${pauses[i]}"
		[ "$i" -ge $((${#pauses[@]} - 1)) ] || i=$((i + 1))
	done
}

install -d -m 0755 "$STATE_DIR"
