#!/usr/bin/env bash
# cni-setup.sh: what the CNI tier (test/cni, make cni-test) needs, when missing.
#
# Idempotent and offline-safe: installs from Debian podman (driven with its CNI
# backend), containernetworking-plugins (the loopback plugin containerd runs
# for every sandbox), busybox-static (the agent image) and containerd (already
# there wherever docker.io is); builds crictl from the Go module proxy once and
# keeps it by version in the cache directory, so a warm machine pays nothing.
# It starts nothing and writes no engine configuration: the tests run podman
# and their own containerd on private configuration, storage and sockets
# (/run/clawnet-ci, /var/lib/clawnet-ci), beside the host's engines.
#
# Environment:
#   CRICTL_VERSION  crictl to build (default v1.34.0; the module proxy here
#                   serves only some versions)
#   CNI_CACHE       where built tools are kept (default /var/cache/clawnet-ci)
set -euo pipefail

crictl_version=${CRICTL_VERSION:-v1.34.0}
cache=${CNI_CACHE:-/var/cache/clawnet-ci}

say() { echo "cni-setup: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
	say "must run as root (installs packages)"
	exit 1
fi

need=()
for pkg in podman containernetworking-plugins busybox-static; do
	dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
# docker.io brings containerd and ctr along; without it, Debian's containerd.
if ! command -v containerd >/dev/null || ! command -v ctr >/dev/null; then
	need+=(containerd)
fi
if [ ${#need[@]} -gt 0 ]; then
	say "installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

crictl=$cache/crictl-$crictl_version
if [ ! -x "$crictl" ]; then
	say "building crictl $crictl_version (about 2.5 min on 2 cores with empty Go caches)"
	mkdir -p "$cache"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	GOBIN=$tmp CGO_ENABLED=0 go install -trimpath -ldflags=-s "sigs.k8s.io/cri-tools/cmd/crictl@$crictl_version" 2>&1 |
		{ grep -v '^go: downloading' || true; } >&2
	install -m 0755 "$tmp/crictl" "$crictl"
fi
say "ready: podman $(podman --version | awk '{print $3}'), containerd $(containerd --version | awk '{print $3}'), crictl $crictl_version at $crictl"
