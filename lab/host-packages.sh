#!/bin/bash
# Debian packages the tests and the lab need on the (Debian 12) host.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
	debootstrap systemd-container iproute2 nftables shellcheck make ca-certificates python3-venv jq \
	testssl.sh pebble curl openssl >/dev/null
