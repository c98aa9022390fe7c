package cnitest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/harness"
)

// run runs a host command with env added to the test's environment, and
// captures what it did (harness.RunCmd).
func run(timeout time.Duration, env []string, name string, args ...string) harness.Result {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	return harness.RunCmd(cmd, timeout)
}

// inNetns returns a runIn that runs scripts with the host's busybox inside
// ns, with only busybox's applets on PATH: what the agent image has.
func inNetns(t *testing.T, ns *harness.NetNS) runIn {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "applets")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("/bin/busybox", filepath.Join(dir, a)); err != nil {
			t.Fatal(err)
		}
	}
	return func(t *testing.T, script string) harness.Result {
		cmd := ns.Command(context.Background(), "/bin/busybox", "sh", "-c", script)
		cmd.Env = []string{"PATH=" + dir}
		return harness.RunCmd(cmd, 30*time.Second)
	}
}
