#!/bin/bash
# Pacemaker's configuration for the active node: DigitalOcean fencing, the
# promotable MariaDB, nginx on every app node, and the reserved IP on the
# promoted node. Built in a copy of the CIB, checked with crm_verify, pushed
# only when it differs.
# Runs on the control node (setting controlNode); any member can.
# Arguments (operation timings and why: infra/tuning.py):
#   RESERVED_IP       the stack's reserved IP
#   API_URL           the DigitalOcean API the agents call
#   HOST_MAP          node name to droplet id, name:id;name:id...
#   WITNESS           the witness's node name, or - without one
#   APP_MEMBERS       the app nodes as NAME=PRIVATE_IP, space separated
#   DB_NODES          every app node name the stack can have (appNodeCount up to its
#                     maximum), space separated, the bootstrap node last (it wins the
#                     first election on equal GTIDs): the agent's node_list. It stays
#                     the same when the app tier scales, because a change to it
#                     restarts MariaDB on every node (the agent cannot reload it); the
#                     agent skips names that are not in the cluster.
#   STONITH_TIMEOUT, FENCE_MONITOR                      fencing
#   DB_PROMOTED_MONITOR, DB_UNPROMOTED_MONITOR,
#   DB_MONITOR_TIMEOUT, DB_OP_TIMEOUT                   the mariadb resource
#   WEB_MONITOR, WEB_MONITOR_TIMEOUT                    nginx
#   RESERVED_IP_MONITOR, RESERVED_IP_MONITOR_TIMEOUT,
#   RESERVED_IP_START_TIMEOUT                           the reserved-IP agent
#   PROMOTION_WAIT_S, RESERVED_IP_WAIT_S                how long this step waits
# Bundle: secret REPL_PASSWORD.
set -euo pipefail
step_args RESERVED_IP API_URL HOST_MAP WITNESS APP_MEMBERS DB_NODES STONITH_TIMEOUT FENCE_MONITOR \
	DB_PROMOTED_MONITOR DB_UNPROMOTED_MONITOR DB_MONITOR_TIMEOUT DB_OP_TIMEOUT WEB_MONITOR WEB_MONITOR_TIMEOUT \
	RESERVED_IP_MONITOR RESERVED_IP_MONITOR_TIMEOUT RESERVED_IP_START_TIMEOUT PROMOTION_WAIT_S RESERVED_IP_WAIT_S -- "$@"
read -ra app_specs <<<"$APP_MEMBERS"
read_bundle
[ -n "${SECRET_REPL_PASSWORD:-}" ] || die "no replication password on stdin"

apps=()
for spec in "${app_specs[@]}"; do
	apps+=("${spec%%=*}")
	[[ " $DB_NODES " == *" ${spec%%=*} "* ]] || die "app node ${spec%%=*} is not in DB_NODES ($DB_NODES)"
	# The address other nodes replicate from (the agent falls back to uname -n).
	crm_attribute --lifetime forever --node "${spec%%=*}" --name mariadb_mysql_master_IP --update "${spec#*=}"
done

for app in "${apps[@]}"; do
	[ -n "$(crm_attribute --node "$app" --name do-ha-db --query -q --lifetime forever 2>/dev/null)" ] ||
		die "$app has not handed its database to pacemaker (db-handover); it would never run MariaDB"
	# Every app node's web tier is in place (this step runs after each web-node):
	# pacemaker may now run, and look for, nginx and the reserved IP there.
	crm_attribute --node "$app" --name do-ha-web --update handed-over --lifetime forever
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pcs cluster cib "$work/original.xml"
cp "$work/original.xml" "$work/cib.xml"
pcsf() { quiet pcs -f "$work/cib.xml" "$@"; }
exists() { CIB_file=$work/cib.xml crm_resource --resource "$1" --query-xml >/dev/null 2>&1; }

fence=(fence_digitalocean api_url="$API_URL" pcmk_host_map="$HOST_MAP")
if exists fence-do; then
	pcsf stonith update fence-do "${fence[@]:1}"
else
	pcsf stonith create fence-do "${fence[@]}" op monitor interval="$FENCE_MONITOR"
fi
# off, not reboot: a reboot fence completes only once the droplet is up again,
# which would hold the failover for a whole boot. The fenced droplet stays off
# until an operator powers it on; it then rejoins as a replica.
pcsf property set stonith-enabled=true stonith-action=off stonith-timeout="$STONITH_TIMEOUT"

db=(binary=/usr/bin/mariadbd-safe config=/etc/mysql/my.cnf datadir=/var/lib/mysql
	pid=/run/mysqld/mysqld.pid socket=/run/mysqld/mysqld.sock log=/var/log/mysql/error.log
	replication_user=repl node_list="$DB_NODES")
if exists mariadb; then
	pcsf resource update mariadb "${db[@]}"
else
	pcsf resource create mariadb ocf:heartbeat:mariadb "${db[@]}" replication_passwd=unset \
		op start timeout="$DB_OP_TIMEOUT" op stop timeout="$DB_OP_TIMEOUT" \
		op promote timeout="$DB_OP_TIMEOUT" op demote timeout="$DB_OP_TIMEOUT" \
		op monitor interval="$DB_PROMOTED_MONITOR" timeout="$DB_MONITOR_TIMEOUT" role=Promoted on-fail=demote \
		op monitor interval="$DB_UNPROMOTED_MONITOR" timeout="$DB_MONITOR_TIMEOUT" role=Unpromoted \
		promotable promoted-max=1 notify=true
fi
pcsf resource meta mariadb-clone clone-max="${#apps[@]}"
# A failed check of the primary demotes it in place (on-fail=demote) instead of a
# stop and a start: a promotable clone promotes only after its starts, so the
# replica's promotion would wait for the failed server's restart. The usual failure
# is a killed mariadbd, which mariadbd-safe has already started again (read-only);
# the wrapper then gives up this node's promotion score, and the replica is
# promoted. Clusters formed before get the same check, at the current interval.
primary_check=$(CIB_file=$work/cib.xml cibadmin --query \
	--xpath "//primitive[@id='mariadb']/operations/op[@name='monitor'][@role='Promoted' or @role='Master']" \
	2>/dev/null | grep -o '<op [^>]*' | head -n 1 | sed -n 's/.* id="\([^"]*\)".*/\1/p') || true
[ -n "$primary_check" ] || die "the mariadb resource has no check of its promoted instance"
CIB_file=$work/cib.xml cibadmin --modify --scope resources --xml-text \
	"<op id=\"$primary_check\" interval=\"$DB_PROMOTED_MONITOR\" on-fail=\"demote\"/>"

# The replication password goes in through cibadmin's stdin, never argv: it
# replaces the placeholder the resource was created with.
xml_escape() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g' <<<"$1"; }
printf '<nvpair id="mariadb-instance_attributes-replication_passwd" name="replication_passwd" value="%s"/>' \
	"$(xml_escape "$SECRET_REPL_PASSWORD")" | CIB_file=$work/cib.xml cibadmin --modify --scope resources --xml-pipe

# nginx runs on every app node, so a move of the active role moves only the
# reserved IP: nothing starts from scratch on the new active node, and its
# nginx has been answering (and checked) all along. Off the active node its
# canary answers 503 (a read-only database), and nothing routes users there.
# Stacks formed before had nginx in the active group: it leaves the group and
# becomes the clone (pacemaker finds the running nginx and keeps it).
if ! exists web; then
	pcsf resource create web systemd:nginx op monitor interval="$WEB_MONITOR" timeout="$WEB_MONITOR_TIMEOUT" clone
elif ! exists web-clone; then
	pcsf resource group remove active web
	pcsf resource clone web
fi
quiet env CIB_file="$work/cib.xml" crm_resource --resource web-clone --meta --set-parameter clone-max \
	--parameter-value "${#apps[@]}"
# A changed check interval reaches a running cluster too: pacemaker replaces the
# recurring check, nginx keeps running.
monitor=$(CIB_file=$work/cib.xml cibadmin --query --xpath "//primitive[@id='web']/operations/op[@name='monitor']" \
	2>/dev/null) || monitor=""
if [[ "$monitor" != *" interval=\"$WEB_MONITOR\""* || "$monitor" != *" timeout=\"$WEB_MONITOR_TIMEOUT\""* ]]; then
	pcsf resource update web op monitor interval="$WEB_MONITOR" timeout="$WEB_MONITOR_TIMEOUT"
fi
if ! exists reserved-ip; then
	pcsf resource create reserved-ip ocf:do-ha-stack:reserved-ip ip="$RESERVED_IP" api_url="$API_URL" \
		op monitor interval="$RESERVED_IP_MONITOR" timeout="$RESERVED_IP_MONITOR_TIMEOUT" \
		op start timeout="$RESERVED_IP_START_TIMEOUT" --group active
else
	pcsf resource update reserved-ip ip="$RESERVED_IP" api_url="$API_URL"
fi
# The reserved IP needs quorum, not fencing (the default): after a crash it moves
# while the lost node is being powered off, not after. An IP cannot make two
# writers: the API gives it to one droplet at a time, its stop never unassigns,
# and the promotion it follows still waits for the fence (a user reaching the
# survivor before that gets a 503 from its read-only database). A partition
# without quorum never takes it. Stacks formed before get it too.
quiet env CIB_file="$work/cib.xml" crm_resource --resource reserved-ip --meta --set-parameter requires \
	--parameter-value quorum

constraints=$(pcs -f "$work/cib.xml" constraint config --full)
# MariaDB runs (and is even looked for) only on nodes whose server db-handover
# handed over: a node that joins later is left alone while systemd runs its
# server for setup and seeding.
if ! grep -q 'location-mariadb-clone-handed-over' <<<"$constraints"; then
	pcsf constraint location mariadb-clone rule constraint-id=location-mariadb-clone-handed-over \
		resource-discovery=never score=-INFINITY not_defined do-ha-db
fi
# Only a replica in sync is promoted: the primary's sync guard marks a replica
# do-ha-db-in-sync=0 before it lets commits go on without that replica's
# confirmation, and 1 once it confirms again (README, "Only a replica in sync is
# promoted"). A node never marked may be promoted, as before the guard.
if ! grep -q 'location-mariadb-clone-in-sync' <<<"$constraints"; then
	pcsf constraint location mariadb-clone rule constraint-id=location-mariadb-clone-in-sync \
		role=Promoted score=-INFINITY do-ha-db-in-sync eq 0
fi
# Likewise nginx and the reserved IP: a node that joins later (its distribution
# nginx still running) is not probed for them until its web tier is handed over,
# so pacemaker never finds an nginx it did not start.
for resource in web-clone active; do
	grep -q "location-$resource-handed-over" <<<"$constraints" ||
		pcsf constraint location "$resource" rule constraint-id="location-$resource-handed-over" \
			resource-discovery=never score=-INFINITY not_defined do-ha-web
done
if ! grep -q 'colocation-active-mariadb-clone' <<<"$constraints"; then
	pcsf constraint colocation add active with Promoted mariadb-clone INFINITY
fi
# No order between the promotion and the reserved IP: the IP moves while the new
# primary is promoted, not after it (a user reaching a replica gets a 503 from its
# read-only database, the same as from a demoted primary). The promotion still
# waits for the fence; the IP does not (requires=quorum, above). Stacks formed
# before had this order.
if grep -q 'order-mariadb-clone-active' <<<"$constraints"; then
	pcsf constraint delete order-mariadb-clone-active-mandatory
fi
if [ "$WITNESS" != - ]; then
	for resource in mariadb-clone active; do
		grep -q "location-$resource-$WITNESS-" <<<"$constraints" ||
			pcsf constraint location "$resource" avoids "$WITNESS"
	done
	# The fence device's start and checks (a Python agent calling the API) run on the
	# witness, so a lost app node's failover does not start it on the survivor beside
	# the notifications and the promotion. A preference above the stickiness, not a
	# rule: with the witness down it runs elsewhere, and goes back once the witness
	# is up (a move of its checks, nothing more). Every node may still fence with it
	# (none is banned).
	grep -q "location-fence-do-$WITNESS-" <<<"$constraints" ||
		pcsf constraint location fence-do prefers "$WITNESS"
fi

# Pacemaker's own alerts: each fencing, membership and resource event runs the
# alert agent on the nodes (alert-mail.sh put it on every node), which spools
# what is worth a mail. Events, unlike the watch's checks, are never missed.
alert_agent=/usr/local/lib/do-ha-stack/alert-agent
[ -x "$alert_agent" ] || die "$alert_agent is missing on $(uname -n): the alert-mail step has not run here"
if ! CIB_file=$work/cib.xml cibadmin --query --xpath "//alert[@id='do-ha-mail']" >/dev/null 2>&1; then
	pcsf alert create id=do-ha-mail path="$alert_agent" description="do-ha-stack: mail failovers, fencing, failures"
fi

crm_verify --xml-file "$work/cib.xml" || die "crm_verify rejected the new configuration"
if ! crm_diff --original "$work/original.xml" --new "$work/cib.xml" >/dev/null 2>&1; then
	quiet pcs cluster cib-push "$work/cib.xml" diff-against="$work/original.xml"
	log "configuration pushed"
else
	log "configuration unchanged"
fi

running() { crm_mon -1 --output-as=xml | grep -q "resource id=\"$1\".*role=\"$2\".*active=\"true\""; }
wait_for "a promoted MariaDB" "$PROMOTION_WAIT_S" running mariadb Promoted
wait_for "the reserved IP" "$RESERVED_IP_WAIT_S" running reserved-ip Started
log "active: $(crm_resource --resource reserved-ip --locate 2>&1)"
