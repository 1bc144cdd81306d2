#!/bin/bash
# Pacemaker's configuration for the active node: DigitalOcean fencing, the
# promotable MariaDB, and nginx with the reserved IP on the promoted node. Built
# in a copy of the CIB, checked with crm_verify, pushed only when it differs.
# Runs on the bootstrap node.
# Args: RESERVED_IP API_URL HOST_MAP(name:droplet;...) WITNESS(name|-) APP=PRIVATE_IP...
# (the bootstrap node last: it wins the first primary election on equal GTIDs)
# Bundle: secret REPL_PASSWORD.
set -euo pipefail
RESERVED_IP=$1 API_URL=$2 HOST_MAP=$3 WITNESS=$4
shift 4
read_bundle
[ -n "${SECRET_REPL_PASSWORD:-}" ] || die "no replication password on stdin"

apps=() node_list=""
for spec in "$@"; do
	apps+=("${spec%%=*}")
	node_list+="${node_list:+ }${spec%%=*}"
	# The address other nodes replicate from (the agent falls back to uname -n).
	crm_attribute --lifetime forever --node "${spec%%=*}" --name mariadb_mysql_master_IP --update "${spec#*=}"
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
	pcsf stonith create fence-do "${fence[@]}" op monitor interval=60s
fi
# off, not reboot: a reboot fence completes only once the droplet is up again,
# which would hold the failover for a whole boot. The fenced droplet stays off
# until an operator powers it on; it then rejoins as a replica.
pcsf property set stonith-enabled=true stonith-action=off stonith-timeout=60s

db=(binary=/usr/bin/mariadbd-safe config=/etc/mysql/my.cnf datadir=/var/lib/mysql
	pid=/run/mysqld/mysqld.pid socket=/run/mysqld/mysqld.sock log=/var/log/mysql/error.log
	replication_user=repl node_list="$node_list")
if exists mariadb; then
	pcsf resource update mariadb "${db[@]}"
else
	pcsf resource create mariadb ocf:heartbeat:mariadb "${db[@]}" replication_passwd=unset \
		op start timeout=120s op stop timeout=120s op promote timeout=120s op demote timeout=120s \
		op monitor interval=5s timeout=30s role=Promoted \
		op monitor interval=7s timeout=30s role=Unpromoted \
		promotable promoted-max=1 notify=true
fi
pcsf resource meta mariadb-clone clone-max="${#apps[@]}"

# The replication password goes in through cibadmin's stdin, never argv: it
# replaces the placeholder the resource was created with.
xml_escape() { sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g' <<<"$1"; }
printf '<nvpair id="mariadb-instance_attributes-replication_passwd" name="replication_passwd" value="%s"/>' \
	"$(xml_escape "$SECRET_REPL_PASSWORD")" | CIB_file=$work/cib.xml cibadmin --modify --scope resources --xml-pipe

if ! exists web; then
	pcsf resource create web systemd:nginx op monitor interval=10s timeout=20s --group active
fi
if ! exists reserved-ip; then
	pcsf resource create reserved-ip ocf:do-ha-stack:reserved-ip ip="$RESERVED_IP" api_url="$API_URL" \
		op monitor interval=10s timeout=30s op start timeout=60s --group active
else
	pcsf resource update reserved-ip ip="$RESERVED_IP" api_url="$API_URL"
fi

constraints=$(pcs -f "$work/cib.xml" constraint config --full)
if ! grep -q 'colocation-active-mariadb-clone' <<<"$constraints"; then
	pcsf constraint colocation add active with Promoted mariadb-clone INFINITY
fi
if ! grep -q 'order-mariadb-clone-active' <<<"$constraints"; then
	pcsf constraint order promote mariadb-clone "then" start active
fi
if [ "$WITNESS" != - ]; then
	for resource in mariadb-clone active; do
		grep -q "location-$resource-$WITNESS-" <<<"$constraints" ||
			pcsf constraint location "$resource" avoids "$WITNESS"
	done
fi

crm_verify --xml-file "$work/cib.xml" || die "crm_verify rejected the new configuration"
if ! crm_diff --original "$work/original.xml" --new "$work/cib.xml" >/dev/null 2>&1; then
	quiet pcs cluster cib-push "$work/cib.xml" diff-against="$work/original.xml"
	log "configuration pushed"
else
	log "configuration unchanged"
fi

running() { crm_mon -1 --output-as=xml | grep -q "resource id=\"$1\".*role=\"$2\".*active=\"true\""; }
wait_for "a promoted MariaDB" 180 running mariadb Promoted
wait_for "the reserved IP" 120 running reserved-ip Started
log "active: $(crm_resource --resource reserved-ip --locate 2>&1)"
