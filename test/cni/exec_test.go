package cnitest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/harness"
)

// run runs a host command with a timeout and captures what it did.
func run(timeout time.Duration, env []string, name string, args ...string) harness.Result {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	return result(ctx, cmd, timeout)
}

// result runs cmd (made with ctx) and captures what it did.
func result(ctx context.Context, cmd *exec.Cmd, timeout time.Duration) harness.Result {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := harness.Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		r.Code, r.Err = -1, fmt.Errorf("%s timed out after %v", strings.Join(cmd.Args, " "), timeout)
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		r.Code, r.Err = -1, err
	}
	return r
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
		const timeout = 30 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		cmd := ns.Command(ctx, "/bin/busybox", "sh", "-c", script)
		cmd.Env = []string{"PATH=" + dir}
		return result(ctx, cmd, timeout)
	}
}
