#!/usr/bin/env bash
# kubelet-setup.sh: the kubelet binary the kubelet tier (test/cni, make kubelet-test) runs.
#
# Builds kubelet KUBELET_VERSION from the Go module proxy once and keeps it by
# version in the cache directory, so a warm machine pays nothing. The
# k8s.io/kubernetes module as served by the proxy has no staging/ tree and its
# vendor/k8s.io/* are links into it: the build copies the module, drops vendor/
# and go.work, and turns every ./staging replace into a require of the
# published staging module at v0.<minor>.<patch>. About 2.5 min on 2 idle cores
# with an empty build cache (2 GB of build cache, 0.5 GB of modules). Starts nothing.
#
# Environment:
#   KUBELET_VERSION  kubelet to build (default v1.34.4)
#   CNI_CACHE        where built tools are kept (default /var/cache/clawnet-ci)
set -euo pipefail

version=${KUBELET_VERSION:-v1.34.4}
cache=${CNI_CACHE:-/var/cache/clawnet-ci}
kubelet=$cache/kubelet-$version

say() { echo "kubelet-setup: $*" >&2; }

if [ -x "$kubelet" ]; then
	say "ready: $kubelet"
	exit 0
fi
case $version in
v1.*.*) ;;
*)
	say "KUBELET_VERSION must look like v1.MINOR.PATCH, got $version"
	exit 1
	;;
esac
say "building kubelet $version (about 2.5 min on 2 idle cores with an empty build cache)"
mkdir -p "$cache"
tmp=$(mktemp -d)
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT
go mod download -json "k8s.io/kubernetes@$version" >/dev/null
src=$tmp/kubernetes
cp -r "$(go env GOMODCACHE)/k8s.io/kubernetes@$version" "$src"
chmod -R u+w "$src"
cd "$src"
rm -rf vendor go.work go.work.sum
staging=v0${version#v1}
# Every "MODULE => ./staging/..." line, in a replace block or on its own.
staged=$(awk '$0 ~ /=> \.\/staging\// { if ($1 == "replace") print $2; else print $1 }' go.mod)
if [ -z "$staged" ]; then
	say "k8s.io/kubernetes@$version: no ./staging replace directives in its go.mod; this script does not know how to build it"
	exit 1
fi
for m in $staged; do
	go mod edit -dropreplace="$m" -require="$m@$staging"
done
CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath \
	-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version" -o "$tmp/kubelet" ./cmd/kubelet 2>&1 |
	{ grep -v '^go: downloading' || true; } >&2
"$tmp/kubelet" --version >&2
install -m 0755 "$tmp/kubelet" "$kubelet"
say "ready: $kubelet"
