#!/usr/bin/env bash
# podman-setup.sh: make a local Podman answer on its Docker-compatible API, for
# the Podman test tier (test/podman), beside Docker and without touching it.
#
# Idempotent: installs podman, catatonit, containernetworking-plugins and uidmap
# from Debian when missing, then starts, when they do not answer yet:
#   - rootful:  podman system service on unix:///run/clawnet-podman/podman.sock
#   - rootless: the same for the user clawnet-rootless (created when missing,
#               with subordinate IDs) on unix:///run/user/UID/podman/podman.sock
# It never pulls an image (there is no registry here): test/podman imports its
# own. Docker keeps its socket; DOCKER_HOST points at Podman's only in the
# Podman tier's environment (make podman-test).
#
# Both services read a private containers.conf (CONTAINERS_CONF), never
# /etc/containers: this host's root lacks CAP_SYS_RESOURCE, so Podman's default
# ulimits (nofile 1048576) cannot be applied and every container would fail
# with "error setting rlimit type 7"; and the CNI backend, since netavark is
# not installed. The containers run with --network none, so Podman creates no
# bridge and no firewall rule.
#
# Environment:
#   PODMAN_SETUP_ROOTLESS  0 skips the rootless service (default 1)
#   PODMAN_SETUP_LOG       where the services log (default /var/log/clawnet-podman.log)
#   PODMAN_SETUP_WAIT      seconds to wait for each service (default 30)
set -euo pipefail

run_dir=/run/clawnet-podman
sock=$run_dir/podman.sock
conf=$run_dir/containers.conf
user=clawnet-rootless
rootless=${PODMAN_SETUP_ROOTLESS:-1}
log=${PODMAN_SETUP_LOG:-/var/log/clawnet-podman.log}
wait_s=${PODMAN_SETUP_WAIT:-30}

say() { echo "podman-setup: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
	say "must run as root (installs packages and starts podman's services)"
	exit 1
fi

missing=()
for pkg in podman catatonit containernetworking-plugins uidmap busybox-static; do
	dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
	say "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

mkdir -p "$run_dir"
chmod 755 "$run_dir" # the rootless service reads the conf too
# The services outlive this script and keep its working directory, which
# their conmons inherit: a checkout that is later removed would leave every
# container start failing with "write child: broken pipe" ("conmon: Failed to
# get working directory" in the log). Start them from /.
cd /
cat >"$conf.tmp" <<'CONF'
# Written by clawnet's scripts/podman-setup.sh for the Podman test tier.
[containers]
# No CAP_SYS_RESOURCE: hard limits cannot be raised, so stay below them.
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[network]
network_backend = "cni"

[engine]
# Each exec's conmon waits this long for the API to fetch the exit code
# (default 300 s): the tier execs a hundred times, and answers at once.
exit_command_delay = 10
CONF
mv "$conf.tmp" "$conf"
mkdir -p "$(dirname "$log")"

# answers SOCKET: the service on SOCKET serves the API.
answers() { podman --url "unix://$1" version >/dev/null 2>&1; }

# retire_stale SOCKET: stop a service on SOCKET whose working directory is
# gone (started, before this script went to /, from a checkout since
# removed): it answers, but can start no container.
retire_stale() {
	local pid
	for pid in $(pgrep -f "podman system service --time=0 unix://$1" || true); do
		if [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == *" (deleted)" ]]; then
			say "stopping the service on $1 (pid $pid): its working directory is gone"
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		fi
	done
}

# wait_for SOCKET WHAT
wait_for() {
	for _ in $(seq 1 "$wait_s"); do
		if answers "$1"; then
			say "$2 answers on $1: podman $(podman --url "unix://$1" version --format '{{.Server.Version}}' 2>/dev/null)"
			return 0
		fi
		sleep 1
	done
	say "$2 did not answer on $1 within ${wait_s}s; last log lines:"
	tail -n 20 "$log" >&2 || true
	return 1
}

retire_stale "$sock"
if answers "$sock"; then
	say "rootful service already answers on $sock"
else
	rm -f "$sock" # a stale socket from a killed service
	say "starting the rootful service on $sock (log: $log)"
	# setsid: the service must outlive this script and the CI step that ran it.
	CONTAINERS_CONF=$conf setsid podman system service --time=0 "unix://$sock" >>"$log" 2>&1 </dev/null &
	wait_for "$sock" "rootful service"
fi

[ "$rootless" = 1 ] || exit 0

if ! id "$user" >/dev/null 2>&1; then
	say "creating the user $user for rootless Podman"
	useradd --create-home --shell /usr/sbin/nologin "$user"
fi
# Subordinate IDs: Debian's useradd adds them; an older user may lack them.
if ! grep -q "^$user:" /etc/subuid || ! grep -q "^$user:" /etc/subgid; then
	usermod --add-subuids 200000-265535 --add-subgids 200000-265535 "$user"
fi
uid=$(id -u "$user")
xdg=/run/user/$uid
rsock=$xdg/podman/podman.sock
mkdir -p "$xdg/podman"
chown -R "$user:" "$xdg"
chmod 700 "$xdg"
retire_stale "$rsock"
if answers "$rsock"; then
	say "rootless service already answers on $rsock"
else
	rm -f "$rsock"
	say "starting the rootless service of $user on $rsock"
	runuser -u "$user" -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="/home/$user" USER="$user" \
		XDG_RUNTIME_DIR="$xdg" CONTAINERS_CONF="$conf" \
		setsid podman system service --time=0 "unix://$rsock" >>"$log" 2>&1 </dev/null &
	wait_for "$rsock" "rootless service"
fi
