package podmantest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clawnet/clawnet/test/enginetest"
	"github.com/clawnet/clawnet/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

const createdNote = "note: DNS: the agent had no /etc/resolv.conf; created one naming the gateway 100.96.0.1"

// TestPodmanAttach attaches a --network none container by name, as a
// person would. Its image has no /etc/resolv.conf and Podman gives it
// none: the attach creates one, in the container's root, and says so.
func TestPodmanAttach(t *testing.T) {
	e := requirePodman(t)
	w := enginetest.NewWorld(t, e)
	name := enginetest.Uniq("cn-attach")
	e.Start(t, name, "--network", "none")
	if r := e.Inside(name, "cat", "/etc/resolv.conf"); r.OK() {
		t.Fatalf("the test container has a resolv.conf before attach (%q): the test would prove nothing", r.Stdout)
	}

	out := w.D.MustCLI(t, "attach", name)
	if !strings.Contains(out, "attached "+name) || !strings.Contains(out, createdNote) {
		t.Errorf("clawnet attach %s printed %q; want the agent named after the container, and %q", name, out, createdNote)
	}
	if r := e.Inside(name, "ls", "-ln", "/etc/resolv.conf"); !r.OK() || !strings.HasPrefix(r.Stdout, "-rw-r--r--") || !strings.Contains(r.Stdout, " 0 ") {
		t.Errorf("ls -ln /etc/resolv.conf inside: %v; want a file readable by all, owned by the container's root", r)
	}
	w.CheckAttachedThenDetach(t, name)
}

// TestPodmanAttachReadOnly: a read-only root without resolv.conf is
// attached all the same, with a note saying what to do; doing it (a file
// naming the gateway mounted at /etc/resolv.conf) gives it names.
func TestPodmanAttachReadOnly(t *testing.T) {
	e := requirePodman(t)
	w := enginetest.NewWorld(t, e)
	name := enginetest.Uniq("cn-ro")
	e.Start(t, name, "--network", "none", "--read-only")
	out := w.D.MustCLI(t, "attach", name)
	for _, want := range []string{"attached " + name, "note: DNS: the agent has no /etc/resolv.conf and its root filesystem is read-only",
		`mount a file holding "nameserver 100.96.0.1" there (run the container with -v FILE:/etc/resolv.conf:ro)`} {
		if !strings.Contains(out, want) {
			t.Errorf("clawnet attach %s printed %q; want %q", name, out, want)
		}
	}
	w.EchoWorks(t, name)
	if r := e.Inside(name, "probe", "lookup", "canary.test"); r.OK() {
		t.Errorf("lookup without a resolv.conf: %v; want a failure", r)
	}

	// The note's advice (and an attach by the PID of a rootful Podman
	// container's process).
	rc := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(rc, []byte("nameserver 100.96.0.1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	advised := enginetest.Uniq("cn-ro-rc")
	e.Start(t, advised, "--network", "none", "--read-only", "-v", rc+":/etc/resolv.conf:ro")
	out = w.D.MustCLI(t, "attach", "--name", advised, "--pid", e.PidOf(t, advised))
	if strings.Contains(out, "note: DNS") {
		t.Errorf("clawnet attach %s printed %q; want no DNS note", advised, out)
	}
	if r := e.Inside(advised, "probe", "lookup", "canary.test"); !r.OK() || !strings.Contains(r.Stdout, w.In.Server4.String()) {
		t.Errorf("lookup canary.test with the mounted resolv.conf: %v", r)
	}
}

// TestPodmanAttachRefusals: a container with the host's network, a stopped
// one and an unknown one are refused with one line saying what to do. (A
// bridged one is refused by the same check; the tier runs none, since
// Podman's bridge would add firewall rules to the host.)
func TestPodmanAttachRefusals(t *testing.T) {
	e := requirePodman(t)
	w := enginetest.NewWorld(t, e)
	hosted := enginetest.Uniq("cn-host")
	e.Start(t, hosted, "--network", "host")
	stopped := enginetest.Uniq("cn-stopped")
	e.Start(t, stopped, "--network", "none")
	e.Must(t, "stop", "-t", "0", stopped)

	w.CheckRefusals(t, []enginetest.Refusal{
		{Target: hosted, Want: `container "` + hosted + `" uses the host network: run it with --network none (or use clawnet run)`},
		{Target: stopped, Want: `container "` + stopped + `" is not running`},
		{Target: "cn-no-such-container", Want: `container "cn-no-such-container" not found`},
	}...)
}

// TestPodmanLifecycle: the daemon follows Podman's events. A restarted
// container (new PID, new namespace) is attached again with the same name
// and policy; a stopped one is detached, and attached again when started;
// a removed one is detached for good.
func TestPodmanLifecycle(t *testing.T) {
	e := requirePodman(t)
	w := enginetest.NewWorld(t, e)
	w.CheckLifecycle(t)
}

// TestPodmanRun: `clawnet run` on Podman finds its holder image under the
// name Podman gave it, runs the agent with the podman CLI, and the agent
// has the gateway, names included, on its very first instruction; --rm
// leaves nothing behind.
func TestPodmanRun(t *testing.T) {
	e := requirePodman(t)
	enginetest.RaceHolder(t)
	w := enginetest.NewWorld(t, e)
	w.CheckRun(t)
	if imgs := e.Must(t, "images", "--format", "{{.Repository}}", "--filter", "reference=*clawnet-holder*"); imgs != "localhost/clawnet-holder" {
		t.Errorf("holder images: %q; want one, localhost/clawnet-holder", imgs)
	}
}

// TestPodmanRunDetached: a detached `clawnet run` agent keeps its holder
// while it exists, across restarts of its container and of clawnetd;
// removing the agent's container (Podman's remove event) removes the holder
// and detaches the agent.
func TestPodmanRunDetached(t *testing.T) {
	e := requirePodman(t)
	enginetest.RaceHolder(t)
	w := enginetest.NewWorld(t, e)
	w.CheckRunDetached(t)
}
