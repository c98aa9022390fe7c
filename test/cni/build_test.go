package cnitest

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/clawnet/clawnet/test/harness"
)

// installPlugin puts clawnet-cni at dst: from $CLAWNET_TEST_BIN when set
// (make cni-test builds bin/ first), else built from the working tree.
func installPlugin(t *testing.T, dst string) {
	t.Helper()
	if dir := os.Getenv(harness.EnvBinDir); dir != "" {
		copyFile(t, filepath.Join(dir, "clawnet-cni"), dst, 0o755)
		return
	}
	goBuild(t, "./cmd/clawnet-cni", dst)
}

// goBuild builds the package pkg (relative to the module root) as a static
// binary at dst.
func goBuild(t *testing.T, pkg, dst string) {
	t.Helper()
	root, err := harness.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", dst, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		cmd.Process.Kill()
		<-done
	}
	if err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatalf("%s=%s: %v", harness.EnvBinDir, filepath.Dir(src), err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
