package podmantest

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clawnet/clawnet/container"
	"github.com/clawnet/clawnet/test/enginetest"
	"github.com/clawnet/clawnet/test/harness"
)

// EnvPodmanTests must be 1 for these tests to run (make podman-test sets it).
const EnvPodmanTests = "CLAWNET_PODMAN_TESTS"

// RootlessUser owns the rootless Podman service scripts/podman-setup.sh
// starts, on /run/user/UID/podman/podman.sock.
const RootlessUser = "clawnet-rootless"

var (
	rootfulOnce, rootlessOnce sync.Once
	rootfulEng, rootlessEng   *enginetest.Engine
	rootfulErr, rootlessErr   error
)

// requirePodman skips t unless Podman tests were asked for, and fails it if
// they were asked for but DOCKER_HOST does not name a Podman that answers: a
// silent skip there would hide a broken CI setup. It returns that engine.
func requirePodman(t *testing.T) *enginetest.Engine {
	t.Helper()
	if os.Getenv(EnvPodmanTests) != "1" {
		t.Skipf("Podman tests run only with %s=1 (make podman-test)", EnvPodmanTests)
	}
	harness.RequireRoot(t)
	rootfulOnce.Do(func() {
		h := os.Getenv("DOCKER_HOST")
		p, ok := strings.CutPrefix(h, "unix://")
		if !ok {
			rootfulErr = fmt.Errorf("DOCKER_HOST=%q: want Podman's socket, unix://... (make podman-test sets it)", h)
			return
		}
		rootfulEng, rootfulErr = podmanAt(p)
	})
	if rootfulErr != nil {
		t.Fatalf("%s=1 but %v (run scripts/podman-setup.sh)", EnvPodmanTests, rootfulErr)
	}
	return rootfulEng
}

// requireRootless is requirePodman for the rootless service of RootlessUser.
// scripts/podman-setup.sh starts it unless PODMAN_SETUP_ROOTLESS=0, which
// skips these tests.
func requireRootless(t *testing.T) *enginetest.Engine {
	t.Helper()
	requirePodman(t)
	if os.Getenv("PODMAN_SETUP_ROOTLESS") == "0" {
		t.Skip("rootless Podman not set up (PODMAN_SETUP_ROOTLESS=0)")
	}
	rootlessOnce.Do(func() {
		u, err := user.Lookup(RootlessUser)
		if err != nil {
			rootlessErr = err
			return
		}
		rootlessEng, rootlessErr = podmanAt("/run/user/" + u.Uid + "/podman/podman.sock")
	})
	if rootlessErr != nil {
		t.Fatalf("%s=1 but no rootless Podman: %v (run scripts/podman-setup.sh)", EnvPodmanTests, rootlessErr)
	}
	return rootlessEng
}

// podmanAt checks that the service on socket is a Podman.
func podmanAt(socket string) (*enginetest.Engine, error) {
	c := container.NewClient(socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	info, err := c.Engine(ctx)
	if err != nil {
		return nil, err
	}
	if info.Name != container.EnginePodman {
		return nil, fmt.Errorf("the engine on %s is %s, not Podman", socket, info.Name)
	}
	return enginetest.Podman("unix://" + socket), nil
}
