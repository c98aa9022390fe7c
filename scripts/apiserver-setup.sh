#!/usr/bin/env bash
# apiserver-setup.sh: a real Kubernetes API server on loopback, for the tests
# that need one (test/kube; the kubelet tier may reuse it).
#
#   apiserver-setup.sh build        build kube-apiserver once per version into the cache
#   apiserver-setup.sh start DIR    start etcd and kube-apiserver, state under DIR;
#                                   writes DIR/kubeconfig and DIR/env, prints DIR/env
#   apiserver-setup.sh stop DIR     stop what start started (by the pids it wrote)
#
# kube-apiserver is built from the Go module proxy by scripts/kube-build.sh, as
# kubelet is. etcd is Debian's etcd-server package.
# Both listen on 127.0.0.1 only, on ports picked free at start; the API server
# takes a bearer token (written into the kubeconfig) and authorizes everything
# (AlwaysAllow): it is a test fixture, never a cluster.
#
# Environment:
#   APISERVER_VERSION  kube-apiserver to build (default v1.34.4)
#   CNI_CACHE          where built tools are kept (default /var/cache/clawnet-ci)
set -euo pipefail

version=${APISERVER_VERSION:-v1.34.4}
cache=${CNI_CACHE:-/var/cache/clawnet-ci}
apiserver=$cache/kube-apiserver-$version

say() { echo "apiserver-setup: $*" >&2; }

build() {
	# About 1 min after a kubelet build, whose compiled packages it reuses;
	# several alone.
	"$(dirname "$0")/kube-build.sh" kube-apiserver "$version"
}

freeport() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
	local dir=$1
	[ -x "$apiserver" ] || build
	if ! command -v etcd >/dev/null; then
		say "installing etcd-server"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null
	fi
	mkdir -p "$dir/etcd" "$dir/pki"
	local etcd_port peer_port api_port token
	etcd_port=$(freeport)
	peer_port=$(freeport)
	api_port=$(freeport)
	etcd --name clawnet-test --data-dir "$dir/etcd" \
		--listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
		--listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
		--initial-cluster "clawnet-test=http://127.0.0.1:$peer_port" \
		--listen-metrics-urls "" >"$dir/etcd.log" 2>&1 &
	echo $! >"$dir/etcd.pid"
	[ -f "$dir/pki/sa.key" ] || openssl genrsa -out "$dir/pki/sa.key" 2048 2>/dev/null
	token=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
	echo "$token,clawnet-test-admin,clawnet-test-admin,system:masters" >"$dir/pki/tokens.csv"
	"$apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
		--bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
		--cert-dir "$dir/pki" --token-auth-file "$dir/pki/tokens.csv" \
		--authorization-mode AlwaysAllow \
		--service-account-issuer https://kubernetes.default.svc --service-account-key-file "$dir/pki/sa.key" \
		--service-account-signing-key-file "$dir/pki/sa.key" --api-audiences clawnet-test \
		--service-cluster-ip-range 10.96.0.0/16 --allow-privileged \
		--enable-priority-and-fairness=false --profiling=false \
		--disable-admission-plugins ServiceAccount >"$dir/apiserver.log" 2>&1 &
	echo $! >"$dir/apiserver.pid"
	cat >"$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {server: "https://127.0.0.1:$api_port", insecure-skip-tls-verify: true}
users:
- name: admin
  user: {token: "$token"}
contexts:
- name: test
  context: {cluster: test, user: admin}
current-context: test
KC
	local i
	for i in $(seq 600); do
		if curl -fsk -H "Authorization: Bearer $token" "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then
			printf 'KUBECONFIG=%s\nAPISERVER=https://127.0.0.1:%s\n' "$dir/kubeconfig" "$api_port" >"$dir/env"
			say "ready after $((i / 10)).$((i % 10)) s: https://127.0.0.1:$api_port"
			cat "$dir/env"
			return
		fi
		if ! kill -0 "$(cat "$dir/apiserver.pid")" 2>/dev/null || ! kill -0 "$(cat "$dir/etcd.pid")" 2>/dev/null; then
			break
		fi
		sleep 0.1
	done
	say "the API server did not become ready; last lines of its log and etcd's:"
	tail -n 20 "$dir/apiserver.log" "$dir/etcd.log" >&2
	stop "$dir"
	exit 1
}

stop() {
	local dir=$1 f pid
	for f in apiserver etcd; do
		[ -f "$dir/$f.pid" ] || continue
		pid=$(cat "$dir/$f.pid")
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$pid" 2>/dev/null || true
		rm -f "$dir/$f.pid"
	done
}

case ${1:-} in
build) build ;;
start) start "${2:?start DIR}" ;;
stop) stop "${2:?stop DIR}" ;;
*)
	echo "usage: $0 build | start DIR | stop DIR" >&2
	exit 2
	;;
esac
