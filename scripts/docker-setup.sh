#!/usr/bin/env bash
# docker-setup.sh: make a local Docker engine answer, for the Docker test tier.
#
# Idempotent: installs docker.io and busybox-static from Debian when missing,
# starts dockerd in the background when no engine answers, then waits until
# `docker info` works. It never pulls an image (there is no registry here):
# the test image is built locally by test/docker with `docker import`.
#
# dockerd is started with --iptables=false and --ip-forward=false so that it
# leaves the host firewall and forwarding alone: its default FORWARD DROP policy
# would silently break the namespace harness and the veth benchmark baselines,
# and clawnet's agents never use Docker networking anyway (--network none).
#
# Environment:
#   DOCKER_SETUP_LOG   where dockerd logs (default /var/log/clawnet-dockerd.log)
#   DOCKER_SETUP_WAIT  seconds to wait for the engine (default 60)
set -euo pipefail

log=${DOCKER_SETUP_LOG:-/var/log/clawnet-dockerd.log}
wait_s=${DOCKER_SETUP_WAIT:-60}

say() { echo "docker-setup: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
	say "must run as root (installs packages and starts dockerd)"
	exit 1
fi

# The engine may already answer (a developer's own Docker, a previous run).
if docker info >/dev/null 2>&1; then
	say "engine already answers"
	exit 0
fi

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
# The test image needs a static busybox; the package path is what the image
# builder looks for first.
if [ ! -x /bin/busybox ] || ! dpkg -s busybox-static >/dev/null 2>&1; then
	missing+=(busybox-static)
fi
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v dockerd >/dev/null 2>&1; then
	say "dockerd not found after installing docker.io"
	exit 1
fi

# A stale pid file from a killed dockerd makes the next one refuse to start.
pidfile=/var/run/docker.pid
if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then
	rm -f "$pidfile"
fi

if [ ! -f "$pidfile" ]; then
	say "starting dockerd (log: $log)"
	mkdir -p "$(dirname "$log")"
	# setsid: dockerd must outlive this script and the CI step that ran it.
	setsid dockerd --iptables=false --ip-forward=false \
		--host unix:///var/run/docker.sock >>"$log" 2>&1 </dev/null &
fi

# The Debian CLI is /usr/bin/docker; another one may come first in PATH and
# that is fine (the API version is negotiated).
for _ in $(seq 1 "$wait_s"); do
	if docker info >/dev/null 2>&1; then
		say "engine answers: $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})' 2>/dev/null)"
		exit 0
	fi
	sleep 1
done
say "dockerd did not answer within ${wait_s}s; last log lines:"
tail -n 20 "$log" >&2 || true
exit 1
