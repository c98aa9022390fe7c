#!/usr/bin/env bash
# cni-setup.sh: what the CNI tier (test/cni, make cni-test) needs, when missing.
#
# Idempotent and offline-safe: installs from Debian podman (driven with its CNI
# backend) and busybox-static (the agent image). It starts nothing and writes
# no engine configuration: the tests run podman on private configuration,
# storage and locks (/run/clawnet-ci, /var/lib/clawnet-ci), beside the host's
# engines.
set -euo pipefail

say() { echo "cni-setup: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
	say "must run as root (installs packages)"
	exit 1
fi

need=()
for pkg in podman busybox-static; do
	dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
	say "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
say "ready: podman $(podman --version | awk '{print $3}')"
