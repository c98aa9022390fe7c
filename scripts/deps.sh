#!/usr/bin/env bash
# deps.sh: install what building and testing clawnet needs, when missing.
# Idempotent and quiet when everything is there. Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pkg in iproute2 iperf3 slirp4netns passt busybox-static docker.io podman catatonit containernetworking-plugins uidmap curl make git ca-certificates; do
	dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps.sh: missing packages ${need[*]}: run as root to install them" >&2
		exit 1
	fi
	echo "deps.sh: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -c /dev/net/tun ]; then
	mkdir -p /dev/net && mknod /dev/net/tun c 10 200
fi
go mod download
./scripts/docker-setup.sh
