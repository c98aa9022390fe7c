# clawnet build and test entry points. `make test` is the one command CI and
# the README use; it needs root for the namespace, TUN, Docker and Podman tiers.
GO       ?= go
BIN      := bin
PKGS_UNIT = $(shell $(GO) list ./... | grep -v '/test\($$\|/\)')
LDFLAGS  := -s -w -X github.com/clawnet/clawnet/internal/version.Version=$(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: all build deps demo test check unit fuzz integration docker-test podman-test bench bench-quick bench-smoke clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/ ./cmd/...

# Installs the Debian packages, Go modules and Docker engine the tests use
# (podman-test starts Podman's services itself).
deps:
	./scripts/deps.sh

# Starts the gateway on its embedded defaults plus a demo agent namespace.
demo: build
	./scripts/demo.sh

test: deps check unit fuzz integration docker-test podman-test cni-test kubelet-test kube-test bench-smoke

check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 $(PKGS_UNIT)

# Every fuzz target for a bounded time (FUZZTIME, 10s each by default).
fuzz:
	./scripts/fuzz.sh

# Packages run one at a time: each builds namespaces, TUNs and daemons.
integration: build
	CLAWNET_INTEGRATION=1 $(GO) test -race -count=1 -p 1 -timeout 25m $$($(GO) list ./test/... | grep -v -e /test/docker -e /test/podman)

docker-test: build
	CLAWNET_DOCKER_TESTS=1 $(GO) test -count=1 -timeout 20m -run Docker ./test/docker/...

# Starts Podman's API services (rootful, and rootless for clawnet-rootless)
# when they do not answer, then runs the Podman tier against them. DOCKER_HOST
# names Podman's socket here only: Docker's stays the default elsewhere.
PODMAN_SOCKET := /run/clawnet-podman/podman.sock
podman-test: build
	./scripts/podman-setup.sh
	DOCKER_HOST=unix://$(PODMAN_SOCKET) CLAWNET_PODMAN_TESTS=1 $(GO) test -count=1 -timeout 10m -run Podman ./test/podman/...

# The CNI tier: clawnet-cni driven by libcni, podman (CNI backend) and
# containerd's CRI through crictl, each on private configuration beside the
# host's engines. cni-setup.sh installs what is missing and builds crictl
# once per version into CNI_CACHE.
.PHONY: cni-test
CRICTL_VERSION ?= v1.34.0
CNI_CACHE      ?= /var/cache/clawnet-ci
cni-test: build
	CRICTL_VERSION=$(CRICTL_VERSION) CNI_CACHE=$(CNI_CACHE) ./scripts/cni-setup.sh
	CLAWNET_CNI_TESTS=1 CLAWNET_TEST_BIN=$(abspath $(BIN)) CLAWNET_CRICTL=$(CNI_CACHE)/crictl-$(CRICTL_VERSION) \
		$(GO) test -count=1 -p 1 -timeout 10m ./test/cni/...

# The kubelet tier: a standalone kubelet (static pods, no API server) on the
# CNI tier's private containerd, calling clawnet-cni; clawnetd also runs as a
# privileged static pod; and a kubelet joined to the API server tier's
# kube-apiserver (etcd-server and kube-apiserver set up as kube-test does),
# running a pod created through it. kubelet-setup.sh builds kubelet once per
# version into CNI_CACHE (about 2.5 min on 2 idle cores, cold). CLAWNET_SKIP_KUBELET=1
# leaves the tier out.
.PHONY: kubelet-test
KUBELET_VERSION ?= v1.34.4
kubelet-test: build
	@if [ "$(CLAWNET_SKIP_KUBELET)" = 1 ]; then echo "kubelet-test: skipped (CLAWNET_SKIP_KUBELET=1)"; exit 0; fi; \
	set -e; \
	CRICTL_VERSION=$(CRICTL_VERSION) CNI_CACHE=$(CNI_CACHE) ./scripts/cni-setup.sh; \
	KUBELET_VERSION=$(KUBELET_VERSION) CNI_CACHE=$(CNI_CACHE) ./scripts/kubelet-setup.sh; \
	command -v etcd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server; \
	APISERVER_VERSION=$(APISERVER_VERSION) CNI_CACHE=$(CNI_CACHE) ./scripts/apiserver-setup.sh build; \
	CLAWNET_CNI_TESTS=1 CLAWNET_TEST_BIN=$(abspath $(BIN)) CLAWNET_CRICTL=$(CNI_CACHE)/crictl-$(CRICTL_VERSION) \
		CLAWNET_KUBELET=$(CNI_CACHE)/kubelet-$(KUBELET_VERSION) APISERVER_VERSION=$(APISERVER_VERSION) CNI_CACHE=$(CNI_CACHE) \
		$(GO) test -count=1 -p 1 -timeout 10m -run Kubelet ./test/cni/...

# The API server tier: kube-apiserver (built once per version into
# CNI_CACHE, like kubelet) on Debian's etcd, both on loopback, and the real
# clawnetd with --kubeconfig (test/kube).
.PHONY: kube-test
APISERVER_VERSION ?= v1.34.4
kube-test: build
	command -v etcd >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server
	APISERVER_VERSION=$(APISERVER_VERSION) CNI_CACHE=$(CNI_CACHE) ./scripts/apiserver-setup.sh build
	CLAWNET_KUBE_TESTS=1 CLAWNET_INTEGRATION=1 CLAWNET_TEST_BIN=$(abspath $(BIN)) APISERVER_VERSION=$(APISERVER_VERSION) CNI_CACHE=$(CNI_CACHE) \
		$(GO) test -count=1 -p 1 -timeout 10m ./test/kube/...

bench: build
	$(GO) run ./bench/cmd/clawbench -out bench/out

bench-quick: build
	$(GO) run ./bench/cmd/clawbench -quick -out bench/out

bench-smoke: build
	$(GO) run ./bench/cmd/clawbench -smoke -out $(shell mktemp -d)

clean:
	rm -rf $(BIN)
