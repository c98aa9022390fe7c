// Package harness builds the world clawnet's integration tests run in: an
// "internet" network namespace joined to the host by a veth and running the
// canary servers, empty agent namespaces, the real clawnetd and clawnet
// binaries, and helpers to open sockets and run commands inside a namespace.
//
// Every resource is named uniquely (the test process's PID is part of each
// name, so a later run can tell leftovers of a dead run from a live one) and
// released with t.Cleanup, also when a test fails. Tests built on it need
// root and run only when asked for (CLAWNET_INTEGRATION=1): RequireRoot
// skips them otherwise, and fails them when asked for on a host that cannot
// run them. Traffic only ever goes to loopback and to namespaces the harness
// made: nothing here may aim at any other address.
package harness

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Main runs a test package built on the harness: the tests, then removal of
// the binaries it built, then a goroutine leak check of the test process.
// Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	removeBuildDir()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "harness: goroutines leaked by the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// EnvIntegration must be 1 for the root-only tier to run; make integration
// sets it.
const EnvIntegration = "CLAWNET_INTEGRATION"

// envDockerTests and envPodmanTests are the container tiers' own switches
// (make docker-test and make podman-test set them, test/docker and
// test/podman check them before calling RequireRoot); they ask for the same
// host, so RequireRoot honours them too.
const (
	envDockerTests = "CLAWNET_DOCKER_TESTS"
	envPodmanTests = "CLAWNET_PODMAN_TESTS"
	envCNITests    = "CLAWNET_CNI_TESTS"
)

// RequireRoot skips t unless the root-only tier was asked for, and fails it
// when it was asked for but the process cannot build namespaces, veths and
// TUN devices (root, /dev/net/tun, the ip and nsenter commands): a skip
// there would count as a pass and hide a host that never ran the tier.
func RequireRoot(t testing.TB) {
	t.Helper()
	requireHost(t, realHost)
}

func requireHost(t testing.TB, h host) {
	t.Helper()
	switch v, why := checkHost(h); v {
	case hostSkip:
		t.Skip(why)
	case hostFail:
		t.Fatal(why)
	}
}

// hostVerdict is what RequireRoot does with a test.
type hostVerdict int

const (
	hostRun  hostVerdict = iota
	hostSkip             // the tier was not asked for
	hostFail             // asked for, but something it needs is missing
)

// host is what checkHost looks at, so a self-test can hand it another one.
type host struct {
	getenv   func(string) string
	geteuid  func() int
	stat     func(string) (os.FileInfo, error)
	lookPath func(string) (string, error)
}

var realHost = host{getenv: os.Getenv, geteuid: os.Geteuid, stat: os.Stat, lookPath: exec.LookPath}

// checkHost decides whether a root-only test runs, skips or fails, with a
// one-line reason for the last two.
func checkHost(h host) (hostVerdict, string) {
	var asked string
	for _, env := range []string{EnvIntegration, envDockerTests, envPodmanTests, envCNITests} {
		if h.getenv(env) == "1" {
			asked = env
			break
		}
	}
	if asked == "" {
		return hostSkip, fmt.Sprintf("root-only integration test: runs only with %s=1 (make integration)", EnvIntegration)
	}
	var missing []string
	if h.geteuid() != 0 {
		missing = append(missing, "root (euid 0)")
	}
	if _, err := h.stat("/dev/net/tun"); err != nil {
		missing = append(missing, "/dev/net/tun")
	}
	for _, cmd := range []string{"ip", "nsenter"} {
		if _, err := h.lookPath(cmd); err != nil {
			missing = append(missing, "the "+cmd+" command")
		}
	}
	if len(missing) > 0 {
		return hostFail, fmt.Sprintf("%s=1 but the root-only tier cannot run here; missing: %s", asked, strings.Join(missing, ", "))
	}
	return hostRun, ""
}

// namePrefix starts every namespace the harness makes; the PID after it lets
// sweepStale tell a dead run's leftovers from a live run's namespaces.
const namePrefix = "cnt"

var seq atomic.Uint64

// uniqueName returns "cnt<pid>-<n>-<role>", unique on this machine for as
// long as this process lives.
func uniqueName(role string) string {
	return fmt.Sprintf("%s%d-%d-%s", namePrefix, os.Getpid(), seq.Add(1), role)
}

// ifName returns a short interface name (at most 15 bytes) unique for this
// process, for veth ends in the host namespace.
func ifName(kind byte) string {
	return fmt.Sprintf("cv%s%c%d", formatBase36(uint64(os.Getpid())), kind, seq.Add(1))
}

func formatBase36(v uint64) string {
	const digits = "0123456789abcdefghijklmnopqrstuvwxyz"
	if v == 0 {
		return "0"
	}
	var b []byte
	for ; v > 0; v /= 36 {
		b = append([]byte{digits[v%36]}, b...)
	}
	return string(b)
}

// Result is what a finished command left behind.
type Result struct {
	Stdout, Stderr string
	// Code is the exit status, or -1 when the command did not run or was
	// killed by a signal.
	Code int
	// Err is set when the command could not start or timed out.
	Err error
}

// OK reports whether the command exited 0.
func (r Result) OK() bool { return r.Err == nil && r.Code == 0 }

func (r Result) String() string {
	s := fmt.Sprintf("exit %d", r.Code)
	if r.Err != nil {
		s += fmt.Sprintf(" (%v)", r.Err)
	}
	return fmt.Sprintf("%s\nstdout: %s\nstderr: %s", s, strings.TrimSpace(r.Stdout), strings.TrimSpace(r.Stderr))
}

// RunCmd runs cmd to completion, killing it when timeout passes first,
// and returns what it did: its output, its exit status, and an error
// naming the command when it did not start or timed out.
// Tests run host commands through it so none can hang a tier.
func RunCmd(cmd *exec.Cmd, timeout time.Duration) Result {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		return Result{Code: -1, Err: fmt.Errorf("start %s: %w", cmd.Path, err)}
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		return Result{Stdout: out.String(), Stderr: errb.String(), Code: -1,
			Err: fmt.Errorf("%s timed out after %v", strings.Join(cmd.Args, " "), timeout)}
	}
	r := Result{Stdout: out.String(), Stderr: errb.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	default:
		r.Code, r.Err = -1, err
	}
	return r
}

// FreePort returns a TCP port of the host's loopback (127.0.0.1) nothing
// listens on right now, for a server the test starts next.
func FreePort(t testing.TB) uint16 {
	t.Helper()
	return FreePortOn(t, "127.0.0.1")
}

// FreePortOn returns a TCP port nothing listens on right now at ip ("0.0.0.0"
// for every IPv4 address, as an engine publishing a port binds).
func FreePortOn(t testing.TB, ip string) uint16 {
	t.Helper()
	ln, err := net.Listen("tcp4", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return uint16(ln.Addr().(*net.TCPAddr).Port)
}

// run runs a host command and returns an error carrying its output.
func run(name string, args ...string) error {
	r := RunCmd(exec.Command(name, args...), time.Minute)
	if !r.OK() {
		return fmt.Errorf("%s %s: %s", name, strings.Join(args, " "), strings.TrimSpace(r.Stderr+" "+errString(r.Err)))
	}
	return nil
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// mustRun runs a host command and fails t if it fails.
func mustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	if err := run(name, args...); err != nil {
		t.Fatal(err)
	}
}

// childAttr makes a child die with the test process, so a test binary killed
// mid-run leaves no daemon or canary behind holding a namespace alive.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
}

// Poll calls cond every interval until it returns true or timeout passes; it
// reports whether cond became true.
func Poll(timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
}
