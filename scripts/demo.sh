#!/usr/bin/env bash
# demo.sh: the product's core in one run. From a sample OpenClaw config
# (scripts/demo-openclaw.json), clawnet policy generate writes the agent's
# policy; a fresh agent attached with it reaches the configured LLM provider
# by name through the gateway's DNS, and is refused a name its config does
# not mention and a raw address.
#
# Builds only the demo's name server (make demo builds clawnet first). Its
# stand-in "internet" is a namespace on a /24 of 198.18.0.0/15 (a
# benchmarking range the demo's clawnetd treats as public) with two web
# servers, the provider llm.demo.test and another host other.demo.test, and
# a name server for both (scripts/demo-dns). Everything it made is removed on
# exit.
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
config=scripts/demo-openclaw.json
work=$(mktemp -d /tmp/clawnet-demo.XXXXXX)
inet=cn-demo-inet-$$ agent=cn-demo-agent-$$ veth=cndemo$$
# A /24 of the benchmarking range that nothing else on this host uses.
for _ in $(seq 50); do
	net=198.18.$((200 + RANDOM % 50))
	ip route get "$net.2" 2>/dev/null | grep -q " dev cn" || break
done
llm=$net.2 other=$net.3
pids=()
etc_netns=0
[ -d /etc/netns ] || etc_netns=1
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	ip netns del "$agent" 2>/dev/null || true
	ip netns del "$inet" 2>/dev/null || true
	ip link del "$veth" 2>/dev/null || true
	rm -rf "/etc/netns/$agent" "$work"
	[ "$etc_netns" = 0 ] || rmdir /etc/netns 2>/dev/null || true
}
trap cleanup EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
# in_agent runs a command inside the agent's namespace, where
# /etc/resolv.conf names the gateway (ip netns exec mounts
# /etc/netns/NAME/resolv.conf there).
in_agent() { ip netns exec "$agent" "$@"; }

step "the agent's config: $config"
cat "$config"

step "clawnet policy generate: the policy that config calls for"
mkdir -p "$work/policies"
"$bin/clawnet" policy generate "$config" --name demo --out "$work/policies/demo.yaml" >/dev/null
sed -e '/^#/d' "$work/policies/demo.yaml"

step "a stand-in internet: llm.demo.test is $llm, other.demo.test is $other"
CGO_ENABLED=0 "${GO:-go}" build -trimpath -o "$work/demo-dns" ./scripts/demo-dns
ip netns add "$inet"
ip link add "$veth" type veth peer name eth0 netns "$inet"
ip addr add "$net.1/24" dev "$veth" && ip link set "$veth" up
ip -n "$inet" addr add "$llm/24" dev eth0
ip -n "$inet" addr add "$other/24" dev eth0
ip -n "$inet" link set eth0 up && ip -n "$inet" link set lo up
mkdir -p "$work/llm/v1" "$work/other"
echo '{"object":"list","data":[{"id":"llm-large"}]}' > "$work/llm/v1/models"
echo "other.demo.test: no agent config mentions me" > "$work/other/index.html"
ip netns exec "$inet" busybox httpd -f -p "$llm:80" -h "$work/llm" & pids+=($!)
ip netns exec "$inet" busybox httpd -f -p "$other:80" -h "$work/other" & pids+=($!)
ip netns exec "$inet" "$work/demo-dns" -listen "$llm:53" llm.demo.test="$llm" other.demo.test="$other" > "$work/dns.log" 2>&1 & pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null "http://$other/" && break; sleep 0.1; done
echo "from the host, without clawnet: $(curl -sS -m 3 "http://$other/")"

step "clawnetd, its DNS upstream the stand-in internet's name server"
cat > "$work/clawnetd.yaml" <<CFG
version: v1
socket: $work/clawnet.sock
policy_dir: $work/policies
audit_log: $work/audit.log
state_dir: $work/state
dns:
  upstream: ["$llm:53"]
treat_as_public: [198.18.0.0/15]
CFG
"$bin/clawnetd" --config "$work/clawnetd.yaml" 2> "$work/clawnetd.log" & pids+=($!)
export CLAWNET_SOCKET=$work/clawnet.sock
for _ in $(seq 50); do [ -S "$CLAWNET_SOCKET" ] && break; sleep 0.1; done

step "a fresh agent namespace (only lo), attached with the generated policy"
ip netns add "$agent"
mkdir -p "/etc/netns/$agent"
echo "nameserver 100.96.0.1" > "/etc/netns/$agent/resolv.conf"
"$bin/clawnet" attach --netns "/var/run/netns/$agent" --name demo-agent --policy demo
ip -n "$agent" -br addr

step "the setup phase: the policy's setup rules (npm, for npx) apply until it ends"
"$bin/clawnet" ls
"$bin/clawnet" policy phase demo-agent run

step "allowed: the agent calls its provider by name, http://llm.demo.test/v1/models"
in_agent curl -sS -m 3 http://llm.demo.test/v1/models

step "refused by name: http://other.demo.test/ (no config mentions it)"
if in_agent curl -sS -m 3 http://other.demo.test/; then
	echo "UNEXPECTED: the agent reached other.demo.test" >&2; exit 1
fi

step "refused by address: http://$other/ (the same host, by raw IP)"
start=$(date +%s%N)
if in_agent curl -sS -m 3 "http://$other/"; then
	echo "UNEXPECTED: the agent reached $other" >&2; exit 1
fi
echo "refused after $(( ($(date +%s%N) - start) / 1000000 )) ms"

step "what the internet's name server was asked (other.demo.test never left the gateway)"
cat "$work/dns.log"
if grep -q other.demo.test "$work/dns.log"; then
	echo "UNEXPECTED: the gateway asked upstream for other.demo.test" >&2; exit 1
fi

step "clawnet policy explain, offline, with the rule's origin"
"$bin/clawnet" policy explain --file "$work/policies/demo.yaml" llm.demo.test:80 || true
"$bin/clawnet" policy explain --file "$work/policies/demo.yaml" other.demo.test:80 || true

step "audit log"
cat "$work/audit.log"

step "detach: the agent has no network at all"
"$bin/clawnet" detach demo-agent
ip -n "$agent" -br link
