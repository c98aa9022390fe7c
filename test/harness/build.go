package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Environment variables that change how binaries are found.
const (
	// EnvBinDir names a directory with prebuilt clawnetd and clawnet (for
	// example bin/ after make build); the harness then builds only the canary.
	EnvBinDir = "CLAWNET_TEST_BIN"
	// EnvRace, when "1", builds clawnetd and clawnet with the race detector.
	EnvRace = "CLAWNET_TEST_RACE"
)

// builds are made once per test process into one temporary directory,
// removed by Main.
var builds struct {
	mu  sync.Mutex // guards dir and done
	dir string
	// done maps a build's name to its outcome, so a failed build is not
	// retried by every test.
	done map[string]buildResult
}

type buildResult struct {
	paths []string
	err   error
}

// ModuleRoot returns the directory holding the clawnet go.mod, found by
// walking up from the working directory (a test runs in its package dir).
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find module root: %w", err)
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && containsModuleLine(b) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find module root: no go.mod of github.com/clawnet/clawnet above the working directory")
		}
		dir = parent
	}
}

func containsModuleLine(gomod []byte) bool {
	const want = "module github.com/clawnet/clawnet\n"
	return len(gomod) >= len(want) && string(gomod[:len(want)]) == want
}

func buildDir() (string, error) {
	if builds.dir == "" {
		d, err := os.MkdirTemp("", "clawnet-test-bin-")
		if err != nil {
			return "", fmt.Errorf("make build dir: %w", err)
		}
		builds.dir = d
	}
	return builds.dir, nil
}

func removeBuildDir() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.dir != "" {
		os.RemoveAll(builds.dir)
		builds.dir = ""
	}
}

// build compiles the packages (relative to the module root) once per
// process and returns the binaries' paths in the same order.
func build(key string, race bool, pkgs ...string) ([]string, error) {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if r, ok := builds.done[key]; ok {
		return r.paths, r.err
	}
	if builds.done == nil {
		builds.done = make(map[string]buildResult)
	}
	paths, err := doBuild(race, pkgs)
	builds.done[key] = buildResult{paths, err}
	return paths, err
}

func doBuild(race bool, pkgs []string) ([]string, error) {
	root, err := ModuleRoot()
	if err != nil {
		return nil, err
	}
	dir, err := buildDir()
	if err != nil {
		return nil, err
	}
	gobin := filepath.Join(goroot(), "bin", "go")
	if _, err := os.Stat(gobin); err != nil {
		gobin = "go"
	}
	args := []string{"build", "-trimpath", "-o", dir + "/"}
	env := append(os.Environ(), "CGO_ENABLED=0")
	if race {
		args = append(args, "-race")
		env = append(os.Environ(), "CGO_ENABLED=1")
	}
	args = append(args, pkgs...)
	cmd := exec.Command(gobin, args...)
	cmd.Dir, cmd.Env = root, env
	r := RunCmd(cmd, 15*time.Minute)
	if !r.OK() {
		return nil, fmt.Errorf("go %v: %s%s", args, r.Stderr, errString(r.Err))
	}
	var paths []string
	for _, p := range pkgs {
		paths = append(paths, filepath.Join(dir, filepath.Base(p)))
	}
	return paths, nil
}

// goroot is where the toolchain running the tests lives; building with the
// same toolchain keeps the binaries in step with the test code.
func goroot() string {
	if r := os.Getenv("GOROOT"); r != "" {
		return r
	}
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return ""
	}
	return string(trimNL(out))
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// CanaryBinary returns the path of the canary, built on first use.
func CanaryBinary(t testing.TB) string {
	t.Helper()
	paths, err := build("canary", false, "./test/canary")
	if err != nil {
		t.Fatalf("build canary: %v", err)
	}
	return paths[0]
}

// Binaries are the clawnet programs under test.
type Binaries struct {
	Clawnetd, Clawnet string
}

// ClawnetBinaries returns clawnetd and clawnet: from $CLAWNET_TEST_BIN when
// set, otherwise built once per process from the working tree.
func ClawnetBinaries(t testing.TB) Binaries {
	t.Helper()
	if dir := os.Getenv(EnvBinDir); dir != "" {
		b := Binaries{Clawnetd: filepath.Join(dir, "clawnetd"), Clawnet: filepath.Join(dir, "clawnet")}
		for _, p := range []string{b.Clawnetd, b.Clawnet} {
			if _, err := os.Stat(p); err != nil {
				t.Fatalf("%s=%s: %v", EnvBinDir, dir, err)
			}
		}
		return b
	}
	race := os.Getenv(EnvRace) == "1"
	paths, err := build(fmt.Sprintf("clawnet race=%v", race), race, "./cmd/clawnetd", "./cmd/clawnet")
	if err != nil {
		t.Fatalf("build clawnetd and clawnet: %v", err)
	}
	return Binaries{Clawnetd: paths[0], Clawnet: paths[1]}
}
