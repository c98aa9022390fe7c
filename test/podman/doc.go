// Package podmantest runs clawnet against a real Podman, rootful and
// rootless, through its Docker-compatible API: the same end-to-end checks as
// test/docker (attach by name, allowed and denied flows seen by the canary,
// `clawnet run` with the gateway on its first instruction, restart and
// removal followed), plus what Podman does differently: an image without
// /etc/resolv.conf (Podman writes none for a --network none container), a
// read-only root, and a rootless user's containers. The tests run only when
// CLAWNET_PODMAN_TESTS=1 (make podman-test, which starts the services with
// scripts/podman-setup.sh and points DOCKER_HOST at the rootful one).
package podmantest
