#!/usr/bin/env bash
# demo.sh: the gateway on its embedded defaults plus one demo agent.
#
# Builds nothing itself (make demo builds first). Creates a small "internet"
# namespace (a /24 of 198.18.0.0/15, a benchmarking range declared public for
# the demo)
# with a web server, starts clawnetd with a demo policy that allows that
# server on port 80 only, attaches a fresh agent namespace, and shows an
# allowed and a denied connection from inside the agent, then the audit log.
# Everything it made is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (it creates namespaces and a TUN)" >&2; exit 1; }

need=()
command -v ip >/dev/null || need+=(iproute2)
command -v busybox >/dev/null || need+=(busybox-static)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
	echo "demo.sh: installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

bin=$PWD/bin
work=$(mktemp -d /tmp/clawnet-demo.XXXXXX)
inet=cn-demo-inet-$$ agent=cn-demo-agent-$$ veth=cndemo$$
# A /24 of the benchmarking range that nothing else on this host uses.
for _ in $(seq 50); do
	net=198.18.$((200 + RANDOM % 50))
	ip route get "$net.2" 2>/dev/null | grep -q " dev cn" || break
done
srv=$net.2
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	ip netns del "$agent" 2>/dev/null || true
	ip netns del "$inet" 2>/dev/null || true
	ip link del "$veth" 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "an \"internet\" namespace with a web server on $srv:80 and :8080"
ip netns add "$inet"
ip link add "$veth" type veth peer name eth0 netns "$inet"
ip addr add "$net.1/24" dev "$veth" && ip link set "$veth" up
ip -n "$inet" addr add "$srv/24" dev eth0
ip -n "$inet" link set eth0 up && ip -n "$inet" link set lo up
mkdir -p "$work/www" && echo "hello from the allowed server" > "$work/www/index.html"
ip netns exec "$inet" busybox httpd -f -p 80 -h "$work/www" & pids+=($!)
ip netns exec "$inet" busybox httpd -f -p 8080 -h "$work/www" & pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "http://$srv:8080/" && break; sleep 0.1; done

step "clawnetd on its embedded defaults, plus a demo policy"
mkdir -p "$work/policies"
cat > "$work/policies/demo.yaml" <<POL
version: v1
name: demo
egress:
  - cidrs: [$srv/32]
    ports: [80]
POL
cat "$work/policies/demo.yaml"
cat > "$work/clawnetd.yaml" <<CFG
version: v1
socket: $work/clawnet.sock
policy_dir: $work/policies
audit_log: $work/audit.log
state_dir: $work/state
treat_as_public: [198.18.0.0/15]
CFG
"$bin/clawnetd" --config "$work/clawnetd.yaml" 2> "$work/clawnetd.log" & pids+=($!)
export CLAWNET_SOCKET=$work/clawnet.sock
for _ in $(seq 50); do [ -S "$CLAWNET_SOCKET" ] && break; sleep 0.1; done

step "a demo agent namespace (only lo), attached"
ip netns add "$agent"
"$bin/clawnet" attach --netns "/var/run/netns/$agent" --name demo-agent --policy demo
ip -n "$agent" -br addr

step "allowed: the agent fetches http://$srv/"
ip netns exec "$agent" curl -sS -m 3 "http://$srv/"

step "denied: the agent tries http://$srv:8080/ (not in its policy)"
start=$(date +%s%N)
if ip netns exec "$agent" curl -sS -m 3 "http://$srv:8080/"; then
	echo "UNEXPECTED: the denied connection worked" >&2; exit 1
fi
echo "refused after $(( ($(date +%s%N) - start) / 1000000 )) ms"

step "clawnet ls"
"$bin/clawnet" ls

step "audit log"
cat "$work/audit.log"

step "detach: the agent has no network at all"
"$bin/clawnet" detach demo-agent
ip -n "$agent" -br link
