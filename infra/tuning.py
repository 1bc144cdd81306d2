"""Every tuning value of the stack, each with why it has that value.

The scripts under cloudinit/ hold no numbers of their own: the steps get these
as named arguments (infra/remote.py), first boot through /etc/do-ha-stack/node.env.
Change a value here and `make render` shows every place it lands.
"""

from __future__ import annotations

# --- SSH connections of the remote commands ----------------------------------------
# A dial that lands in the nodes' SSH rate limit (below) or on a node still
# booting is retried instead of failing the step.
SSH_DIAL_ERROR_LIMIT = 30
SSH_PER_DIAL_TIMEOUT_S = 10

# --- SSH rate limit per source address (each node's firewall) -------------------------
# A token bucket per source. `pulumi up` opens one connection per remote command and
# runs independent commands at once (a fresh stack sends up to 9 to one node within a
# minute, plus dial retries), so a burst this size passes untouched...
SSH_RATE_BURST = 30
# ...and after it one new connection every 6 s gets through: the long-run rate of
# ufw's own `limit` (6 per 30 s). That one is not used because it also counts refused
# attempts: a client that dials again within 5 s (pulumi-command does) stays locked
# out for good once it opened more than 5 connections in 30 s.
SSH_RATE_PER_MINUTE = 10
# A source's bucket is forgotten only once it would be full again anyway (the
# kernel's default, 10 s, would hand a pausing attacker a fresh burst).
SSH_RATE_FORGET_MS = SSH_RATE_BURST * 60_000 // SSH_RATE_PER_MINUTE

# --- how the steps wait (cloudinit/steps/lib.sh wait_for) ----------------------------
# A wait checks again after these pauses (seconds), the last one repeating: a short
# wait ends within a tenth of a second of its condition, a long one costs no more
# checks (crm_mon, gluster, mariadb clients) than one a second.
WAIT_POLL_S = (0.1, 0.2, 0.5, 1)

# --- corosync ------------------------------------------------------------------------
# A silent node is declared dead after token + consensus, about 2.6 s: fast
# failure detection, yet long enough not to flap on a busy droplet.
COROSYNC_TOKEN_MS = 1200
# corosync lengthens the token by this much per node beyond two (its default,
# 650 ms, made the token 1850 ms with three nodes: detection 3.3 s); the token
# above is already meant for this cluster's size.
COROSYNC_TOKEN_COEFFICIENT_MS = 0
# corosync's own rule of thumb: consensus = 1.2 x token.
COROSYNC_CONSENSUS_MS = COROSYNC_TOKEN_MS * 12 // 10
# A node that lost the token rejoins quickly instead of after the 50 ms x N default.
COROSYNC_JOIN_MS = 100
# pcs waits this long for a node to start or join before the step fails.
CLUSTER_START_WAIT_S = 180
# How long a starting node waits to hear from a DC before it calls an election.
# Pacemaker's 20 s default is the largest single wait of a first `up`; in one VPC
# the members answer in milliseconds, and a too-short value costs only a second
# election.
DC_DEADTIME = "5s"

# --- pacemaker -----------------------------------------------------------------------
# Resources stay where they run unless that node fails (no move back after a
# failover, which would be a second outage).
RESOURCE_STICKINESS = 200
# A resource failing three times in a row on a node moves elsewhere...
MIGRATION_THRESHOLD = 3
# ...and its failures are forgotten after two minutes.
FAILURE_TIMEOUT = "120s"
# Without quorum a partition stops its resources: it must never take writes.
NO_QUORUM_POLICY = "stop"
# Pacemaker runs fewer actions at once on a node whose CPU load passes this share
# of its cores (default 80%): above 1.2 x 80% it runs one at a time. On a busy
# 2-vCPU droplet that serialises a failover (the reserved IP waits for MariaDB's
# notifications, or the reverse) exactly when it matters; the stack has a handful
# of resources, so their actions never overload a node. Measured in the lab under
# load, a planned switchover's pause: 3.9 s at 80%, 2.3 s at 400%.
LOAD_THRESHOLD = "400%"
# How many scheduler inputs that logged a configuration error the DC keeps (its
# default, -1, keeps every one). Pacemaker 3.0's scheduler never clears that error
# once logged, so every later transition of the process is saved as one: a year of
# them would fill /var/lib/pacemaker. The same bound as its ordinary inputs'.
PE_ERROR_SERIES_MAX = 4000
# How long the DC waits after a change before its scheduler runs (pacemaker's
# transition-delay; default 0). When a node is lost the DC writes its state to the
# CIB and asks the scheduler at once; if its own writes are still in flight when the
# scheduler's CIB query returns, pacemaker 3.0 sleeps a whole second and asks again
# (controld_schedulerd.c, "Re-asking for the CIB"). That struck 2 of 5 lab crashes
# (4 of 5 in an earlier bench) and put the fence request 1 s late. The writes take
# 10-30 ms; waiting 100 ms first costs every recovery that much and took the lab's
# crash failover from 4.24 s (median, p95 5.11) to about 4.0 s (p95 4.1), none late.
# Each change restarts the wait, so changes coming faster than this would hold the
# scheduler off; the stack's own changes (scores, marks, results) come seconds apart.
# In milliseconds: pcs accepts whole seconds only, so the step sets it with crm_attribute.
TRANSITION_DELAY = "100ms"
# Power actions through the API take seconds; a minute covers a slow one.
STONITH_TIMEOUT = "60s"
# The fence device's own health check (an API read), not on the failover path.
FENCE_MONITOR_INTERVAL = "60s"
# MariaDB: the promoted instance is checked every 2 s: a killed mariadbd (the OOM
# killer's usual victim) is found within that and the replica promoted (the check
# demotes the primary in place, cluster-resources.sh). Each check costs about 0.16 s
# of CPU (the lab), some 8% of one core on the primary. Replicas every 7 s (a
# different interval, as pacemaker requires).
DB_PROMOTED_MONITOR = "2s"
DB_UNPROMOTED_MONITOR = "7s"
DB_MONITOR_TIMEOUT = "30s"
# Start, stop, promote and demote may wait for InnoDB recovery or relay logs.
DB_OP_TIMEOUT = "120s"
# nginx on every app node: a killed nginx is found within this and restarted in
# place (the target is service back within 3 s); the check is one systemd D-Bus
# query. Running clusters get a changed value from cluster-resources.
WEB_MONITOR = "2s"
WEB_MONITOR_TIMEOUT = "20s"
# ...and before that check comes, systemd starts a killed nginx again after this
# pause (its drop-in overrides the Restart=no pacemaker gives the units it runs; a
# stop by pacemaker or an operator is never undone). nginx keeps no state: in place
# at once beats a check interval plus a restart. systemd's own start limit (5 in
# 10 s) ends a crash loop, and pacemaker's check then finds nginx failed.
WEB_RESTART_MS = 200
# The reserved-IP agent on the active node.
RESERVED_IP_MONITOR = "10s"
RESERVED_IP_MONITOR_TIMEOUT = "30s"
# An assign is retried with backoff on 422/429/5xx; a minute covers that.
RESERVED_IP_START_TIMEOUT = "60s"
# How long cluster-resources waits for a promoted MariaDB and the reserved IP.
PROMOTION_WAIT_S = 180
RESERVED_IP_WAIT_S = 120

# --- GlusterFS -----------------------------------------------------------------------
# A dead peer is given up on after 5 s instead of freezing clients for the
# default 42 s.
GLUSTER_PING_TIMEOUT_S = 5
# Writes need a majority of the replica set (with the arbiter: 2 of 3).
GLUSTER_QUORUM_TYPE = "auto"
# Bound on one `gluster peer probe` (the CLI can otherwise hang on a dead peer).
GLUSTER_PROBE_TIMEOUT_S = 60
# A replaced node's brick is filled from the others before the step succeeds:
# time for a few GiB over the VPC; a longer heal fails the step with its backlog.
GLUSTER_HEAL_WAIT_S = 900
# A heal that has made no progress this long is asked for again (and bricks not
# connected are started): a request made while a brick was still coming up can be
# lost, and the daemons' own crawl comes only every 10 minutes.
GLUSTER_HEAL_NUDGE_S = 30
# GlusterFS 11.1's clients can stay stuck on a restarted brick's old port
# (cloudinit/app/gluster-reconnect). Each app node checks its mount and self-heal
# daemon this often; a client missing a brick that answers on its port this many
# checks in a row is restarted (a brick coming back is reconnected to within a
# few seconds, so two checks never catch a healthy client), and a client at most
# once per hold-off, so a cause this does not cure is not remounted over and over.
GLUSTER_RECONNECT_INTERVAL_S = 15
GLUSTER_RECONNECT_MISSES = 2
GLUSTER_RECONNECT_HOLDOFF_S = 300

# --- droplets --------------------------------------------------------------------------
# Deleting a droplet with graceful_shutdown first shuts it down; pacemaker stopping
# or moving its resources and GlusterFS flushing can take minutes, and the
# provider's default of 60 s would fail the replacement half way.
DROPLET_DELETE_TIMEOUT = "10m"

# --- make replace (tooling/replace_node.py) ------------------------------------------
# Standby moves the active role off a node: pacemaker demotes, promotes and moves
# nginx and the reserved IP, each bounded by its own operation timeout.
REPLACE_DRAIN_TIMEOUT_S = 300
# `make switchover`: how long the target replica may take to apply the primary's
# last transaction once the primary is read-only. An in-sync replica needs
# milliseconds.
SWITCHOVER_CATCH_UP_S = 2
# Pacemaker's check of the primary fails a read-only primary (its server restarted
# after a crash), but lets one the switchover made read-only pass for this long: the
# catch-up, two SSH calls and pacemaker's demotion, with room to spare. A switchover
# that dies half way leaves a read-only primary; after this the check fails it and
# the replica is promoted.
SWITCHOVER_READ_ONLY_GRACE_S = 20
# After the replacing `up`, the new node joins, its brick heals and its replica
# catches up; the command waits this long for a healthy stack, polling.
REPLACE_SETTLE_TIMEOUT_S = 900
REPLACE_SETTLE_POLL_S = 10

# --- make upgrade (tooling/rolling_upgrade.py) ----------------------------------------
# A droplet's reboot takes well under a minute; a new kernel's first boot, or a
# filesystem check, can take minutes. Polled for a new boot id this often.
UPGRADE_REBOOT_TIMEOUT_S = 600
UPGRADE_REBOOT_POLL_S = 5

# --- MariaDB -------------------------------------------------------------------------
# A primary whose replica is gone waits this long for an acknowledgement, then
# commits alone (semi-sync falls back to asynchronous). Every time the last replica
# disconnects (a replica replaced, restarted or handed to pacemaker) one commit
# waits this long: kept under a client's usual 1 s timeout, so that costs a slow
# write, not a failed one (measured in the lab: 1000 ms failed one write per
# replica departure), and still hundreds of VPC round trips.
SEMI_SYNC_TIMEOUT_MS = 500
# The sync guard (cloudinit/app/db-sync-guard) decides instead of that timeout on a
# primary pacemaker runs: it polls this often, and once commits have waited this long
# with no acknowledgement arriving (or no replica is connected), it marks the replicas
# out of sync in the CIB and only then lets the commits go on alone. So a replica's
# departure costs one commit about STALL + a CIB write (~0.5 s, the lab), as the plain
# timeout did, and the replica is never promoted with writes it lacks. The backstop is
# MariaDB's own timeout meanwhile: it ends a wait the guard cannot (a primary without
# quorum, a CIB that refuses the mark), and only then do commits go on unmarked.
SYNC_GUARD_POLL_S = 0.1
SYNC_GUARD_STALL_S = 0.3
SYNC_GUARD_BACKSTOP_MS = 30_000
# A semi-sync replica that stops replicating (every promotion does) first connects
# to its primary to end its binlog stream there. After a crash that primary is
# gone, and the connect waits this long (MariaDB's default: 5 s) on the failover's
# critical path. 1 s is MariaDB's smallest value (0 means no limit) and a VPC
# round trip is well under a millisecond.
SEMI_SYNC_KILL_CONN_TIMEOUT_S = 1
# The stack's own CA lives ten years; node certificates two, re-issued by a
# `pulumi up` in their last month.
DB_CA_VALIDITY_HOURS = 10 * 365 * 24
DB_CERT_VALIDITY_HOURS = 2 * 365 * 24
DB_CERT_RENEW_BEFORE_HOURS = 30 * 24
# The same lifetimes for GlusterFS's CA and node certificates (infra/storage.py).
STORAGE_CA_VALIDITY_HOURS = DB_CA_VALIDITY_HOURS
STORAGE_CERT_VALIDITY_HOURS = DB_CERT_VALIDITY_HOURS
STORAGE_CERT_RENEW_BEFORE_HOURS = DB_CERT_RENEW_BEFORE_HOURS
# Each wait of the seed step (db-seed.sh): pacemaker stopping or starting MariaDB
# on the node (its own operation timeout is DB_OP_TIMEOUT, 120 s), a replica
# reconnecting before it is judged, replication healthy after a seed.
DB_SEED_WAIT_S = 120
# A node joining a running cluster (replaced or added) hands its seeded server to
# pacemaker: a stop, a start by the agent (InnoDB recovery, relay logs) and
# replication catching up.
DB_JOIN_WAIT_S = 180

# --- the canary (cloudinit/app/canary.py) --------------------------------------------
# Its rows are deleted after this many days (once an hour, on the primary): enough to
# investigate a failover's writes afterwards, and the table stays small.
CANARY_RETENTION_DAYS = 7

# --- accounts on every node (login.defs) ---------------------------------------------
# New files private to their owner and group by default.
LOGIN_UMASK = "027"
# Password ageing and hashing for any password ever set (the deploy user has none).
PASS_MAX_DAYS = 365
PASS_MIN_DAYS = 1
SHA_CRYPT_MIN_ROUNDS = 65536

# --- make status (tooling/status.py) ---------------------------------------------------
# A replica whose SQL thread is this far behind is reported degraded: a failover
# first applies the relay log before the new primary takes writes, so lag adds to
# the failover time, and 10 s already exceeds detection plus fencing (a few seconds).
STATUS_MAX_REPLICA_LAG_S = 10
# Each read-only probe on a node (crm_mon, gluster heal info, mariadb) gets this
# long; gluster and the crm tools can hang on a dead peer.
STATUS_PROBE_TIMEOUT_S = 20
# An unreachable node is reported after this, not waited for.
STATUS_SSH_CONNECT_TIMEOUT_S = 10
# Each DigitalOcean API read.
STATUS_API_TIMEOUT_S = 10

# How soon an app node serves a certificate another node renewed (ACME): its sync
# timer's period. Renewals come 30 days before expiry, so a minute is plenty; the
# node that renewed serves the new certificate at once.
SITE_CERT_SYNC_S = 60

# Uptime alerts on the HTTPS site (infra/monitoring.py). ACME renews 30 days before
# expiry, so a certificate with 21 days left means renewals have failed for nine
# days; a supplied one gets three weeks' notice.
CERT_EXPIRY_ALERT_DAYS = 21
UPTIME_LATENCY_ALERT_MS = 2000
# The site's A record (dnsZone): it never changes on a failover (the reserved IP
# moves instead), so an hour's caching costs nothing.
SITE_DNS_TTL_S = 3600

# Backups (infra/backups.py, cloudinit/app/db-backup). Nightly, spread over half an
# hour so stacks sharing a region do not all upload at once; a backup older than 26 h
# (a night missed, with two hours' slack) fails the hourly check and the uptime check.
BACKUP_ON_CALENDAR = "*-*-* 02:30:00"
BACKUP_SPREAD_S = 1800
BACKUP_STALE_AFTER_H = 26
# How long a run waits for the repository to open before it fails (restic itself
# retries a refused request for many minutes: a wrong key would go unnoticed as long).
BACKUP_REACH_TIMEOUT_S = 60
# Binlog shipping: the primary's binlogs reach the bucket every 30 s (the recovery
# point is at most this behind), its active binlog closed at 64 MiB so each shipment
# re-reads little; nothing shipped for 10 minutes fails the checks.
BINLOG_SHIP_S = 30
BINLOG_ROTATE_MB = 64
BINLOG_STALE_S = 600
# An upload abandoned half-way (a node killed) is removed from the bucket after this.
BACKUP_ABORT_UPLOAD_DAYS = 1
# How long /canary/backup answers 503 before the uptime alert mails (a run in progress
# never makes it 503; a failure or staleness lasts until the next good run).
BACKUP_ALERT_PERIOD = "10m"
