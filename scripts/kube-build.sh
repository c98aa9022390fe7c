#!/usr/bin/env bash
# kube-build.sh COMPONENT VERSION: builds cmd/COMPONENT of Kubernetes VERSION
# (kubelet, kube-apiserver) from the Go module proxy once, into
# CNI_CACHE/COMPONENT-VERSION; a warm machine pays nothing. scripts/kubelet-setup.sh
# and scripts/apiserver-setup.sh build with it.
#
# The k8s.io/kubernetes module as served by the proxy has no staging/ tree and its
# vendor/k8s.io/* are links into it: the build copies the module, drops vendor/
# and go.work, and turns every ./staging replace into a require of the
# published staging module at v0.<minor>.<patch>. Components built one after
# the other share most of their compiled packages. Starts nothing.
#
# Environment:
#   CNI_CACHE  where built tools are kept (default /var/cache/clawnet-ci)
set -euo pipefail

component=${1:?usage: kube-build.sh COMPONENT VERSION}
version=${2:?usage: kube-build.sh COMPONENT VERSION}
cache=${CNI_CACHE:-/var/cache/clawnet-ci}
out=$cache/$component-$version

say() { echo "kube-build: $*" >&2; }

if [ -x "$out" ]; then
	say "ready: $out"
	exit 0
fi
case $version in
v1.*.*) ;;
*)
	say "the $component version must look like v1.MINOR.PATCH, got $version"
	exit 1
	;;
esac
say "building $component $version"
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
	-ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$version" -o "$tmp/$component" "./cmd/$component" 2>&1 |
	{ grep -v '^go: downloading' || true; } >&2
"$tmp/$component" --version >&2
install -m 0755 "$tmp/$component" "$out"
say "ready: $out"
