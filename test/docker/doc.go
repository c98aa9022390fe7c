// Package dockertest runs clawnet against a real Docker engine and holds
// the end to end tests of `clawnet attach CONTAINER` and `clawnet run`; the
// test image is built locally (test/enginetest, no registry is ever
// involved). The tests run only when CLAWNET_DOCKER_TESTS=1 and an engine
// answers (make docker-test; scripts/docker-setup.sh starts one).
package dockertest
