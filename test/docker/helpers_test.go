package dockertest

import (
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/enginetest"
	"github.com/clawnet/clawnet/test/harness"
)

// EnvDockerTests must be 1 for these tests to run (make docker-test sets it).
const EnvDockerTests = "CLAWNET_DOCKER_TESTS"

// docker is the engine these tests drive: the one DOCKER_HOST (or the
// default) names.
var docker = enginetest.Docker()

// requireDocker skips t unless Docker tests were asked for, and fails it if
// they were asked for but no engine answers: a silent skip there would hide
// a broken CI setup.
func requireDocker(t *testing.T) {
	t.Helper()
	if os.Getenv(EnvDockerTests) != "1" {
		t.Skipf("Docker tests run only with %s=1 (make docker-test)", EnvDockerTests)
	}
	harness.RequireRoot(t)
	if r := harness.RunCmd(exec.Command("docker", "info", "--format", "{{.ServerVersion}}"), 30*time.Second); !r.OK() {
		t.Fatalf("%s=1 but no Docker engine answers (run scripts/docker-setup.sh): %v", EnvDockerTests, r)
	}
}
