# do-ha-stack developer entry points. `make test` is what CI runs.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STACK  ?= staging
OUT    ?= build/$(STACK)

.PHONY: setup lint test test-unit render bench bench-seed bench-backup bench-failover bench-switchover lab lab-down host-packages preview up destroy state-bucket state-upgrade status replace scale switchover upgrade rekey-site restore

# requirements-dev.txt: the program's requirements.txt and policy/requirements.txt,
# plus what the tests, the lab, the tooling and the linter need.
$(VENV)/.installed: requirements.txt requirements-dev.txt policy/requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

# Debian packages the tests and the lab need on the host (root).
host-packages:
	bash lab/host-packages.sh

# ruff over the whole tree (settings: pyproject.toml). `make test` and
# `make test-unit` run it first.
lint: setup
	$(VENV)/bin/ruff check

# Everything: lint, mocks tests, Debian 13 tool checks, and the lab tier; the
# slowest tests and their times are listed at the end (what CI time goes into).
test: setup lint
	$(PY) -m pytest -q --durations=25

# Fast tier only: lint, mocks and Debian 13 tool checks, no containers.
test-unit: setup lint
	$(PY) -m pytest -q -m "not lab"

render: setup
	$(PY) -m tooling.render --stack $(STACK) --out $(OUT)

bench: setup
	$(PY) -m bench.mocks_eval

# Seeding a replica with 1 GiB in the lab (root): logical vs physical, each node on a
# disk of its own; figures printed and recorded in build/lab-report.json ("seeding").
# ARGS='--gib 2 --node-disks host --keep'.
bench-seed: setup
	$(PY) -m bench.seed $(ARGS)

# Backups at 1 GiB in the lab (root): backup, size in the bucket, restore times,
# the primary's worst commit; recorded in build/lab-report.json ("backup_bench").
bench-backup: setup
	$(PY) -m bench.backup $(ARGS)

# Failovers in the lab (root), phase by phase: per run and median/p95, at an
# instant and a pessimistic API (build/lab-report.json "failover_bench").
# ARGS='--runs 7 --latency instant,lab,pessimistic --keep'.
bench-failover: setup
	$(PY) -m bench.failover $(ARGS)

# Planned switchovers in the lab (root), phase by phase: per run and median/p95
# (build/lab-report.json "switchover_bench"). ARGS='--runs 10 --keep'.
bench-switchover: setup
	$(PY) -m bench.switchover $(ARGS)

# The lab: the lab stack on Debian 13 containers on this machine (root).
lab: setup
	$(PY) -m lab up

lab-down: setup
	$(PY) -m lab down

# The Pulumi CLI for one stack: make preview|up|destroy STACK=staging|prod
# (STACK must be given; its default above is only for render). tooling/cli_guard
# checks the CLI, the backend login and the DigitalOcean token first, and
# refuses `destroy STACK=prod` without CONFIRM_DESTROY_PROD=yes.
# Extra pulumi flags: ARGS='--yes --skip-preview'.
GIVEN_STACK = $(if $(filter file,$(origin STACK)),,$(STACK))

preview up destroy: setup
	CONFIRM_DESTROY_PROD='$(CONFIRM_DESTROY_PROD)' $(PY) -m tooling.cli_guard $@ '$(GIVEN_STACK)' $(ARGS)

# Once after upgrading do-ha-stack: take resources this version retires out of the
# stack's state without their provider deleting anything (`make up` refuses until then).
state-upgrade: setup
	$(if $(GIVEN_STACK),,$(error STACK is required: make state-upgrade STACK=staging (or STACK=prod)))
	$(PY) -m tooling.state_upgrade '$(GIVEN_STACK)' $(ARGS)

# One screen of a running stack's health; exits 1 when anything is degraded, so it
# can gate a deploy (2: could not run). Node addresses from `pulumi stack output`,
# or OUTPUTS=file.json (saved with `pulumi stack output --json`). SSH as the stack's
# deployUser with your own key; DIGITALOCEAN_TOKEN in the environment adds the API's
# view. STACK=lab asks the lab running on this machine (root). Extra: ARGS='--json'.
status: setup
	$(if $(filter lab,$(GIVEN_STACK)),$(PY) -m lab health $(ARGS),$(PY) -m tooling.status --stack '$(GIVEN_STACK)' $(if $(OUTPUTS),--outputs '$(OUTPUTS)') $(ARGS))

# Replace one node's droplet while the stack serves (README, "Replacing a node"):
# make replace STACK=prod NODE=app2 [ARGS=--yes]
replace: setup
	$(if $(GIVEN_STACK),,$(error STACK is required: make replace STACK=staging NODE=app2))
	$(if $(NODE),,$(error NODE is required: make replace STACK=$(GIVEN_STACK) NODE=app2 (one of app1.., witness)))
	$(PY) -m tooling.replace_node --stack '$(GIVEN_STACK)' --node '$(NODE)' $(ARGS)

# Debian's updates with the cluster's held packages, one node at a time, each rebooted
# (README, "Rolling upgrades"): make upgrade STACK=prod [NODES=witness,app2]
upgrade: setup
	$(if $(GIVEN_STACK),,$(error STACK is required: make upgrade STACK=staging [NODES=witness,app2]))
	$(PY) -m tooling.rolling_upgrade --stack '$(GIVEN_STACK)' $(if $(NODES),--nodes '$(NODES)') $(ARGS)

# Move the active role to another app node on purpose (README, "Planned switchover"):
# make switchover STACK=prod [TO=app2]
switchover: setup
	$(if $(GIVEN_STACK),,$(error STACK is required: make switchover STACK=staging [TO=app2]))
	$(PY) -m tooling.switchover --stack '$(GIVEN_STACK)' $(if $(TO),--to '$(TO)') $(ARGS)

# A new key and certificate for the site now, the old one revoked (README, "HTTPS"):
# make rekey-site STACK=prod
rekey-site: setup
	$(if $(GIVEN_STACK),,$(error STACK is required: make rekey-site STACK=staging))
	$(PY) -m tooling.site_rekey --stack '$(GIVEN_STACK)' $(ARGS)

# Change the number of app nodes (README, "Scaling app nodes"): make scale STACK=staging APP_NODES=3
scale: setup
	$(if $(GIVEN_STACK),,$(error STACK is required: make scale STACK=staging APP_NODES=3))
	$(if $(APP_NODES),,$(error APP_NODES is required: make scale STACK=$(GIVEN_STACK) APP_NODES=3))
	$(PY) -m tooling.scale --stack '$(GIVEN_STACK)' --app-nodes '$(APP_NODES)' $(ARGS)

# The Pulumi state bucket on DigitalOcean Spaces (private, versioned):
# make state-bucket BUCKET=name REGION=fra1 [ENDPOINT=https://...]
state-bucket: setup
	$(if $(BUCKET),,$(error BUCKET is required: make state-bucket BUCKET=name REGION=fra1))
	$(if $(REGION),,$(error REGION is required: make state-bucket BUCKET=name REGION=fra1))
	$(PY) -m tooling.state_backend --bucket='$(BUCKET)' --region='$(REGION)' $(if $(ENDPOINT),--endpoint='$(ENDPOINT)')

# Roll the database back to a point in its backups, in the running cluster (README,
# "Backups"): make restore STACK=prod AT='2026-12-04 09:14:00' (or a GTID, or latest);
# FROM=old-stack restores another stack's backups (a fresh stack taking over);
# FILES=1 the site's files (/srv/shared/www) too.
restore: setup
	$(if $(GIVEN_STACK),,$(error STACK is required: make restore STACK=staging AT='YYYY-MM-DD HH:MM:SS'))
	$(PY) -m tooling.restore --stack '$(GIVEN_STACK)' $(if $(AT),--at '$(AT)') $(if $(FROM),--from '$(FROM)') $(if $(FILES),--files) $(ARGS)
