package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// fakeAttacher records what the Watcher asks the daemon to do.
type fakeAttacher struct {
	mu          sync.Mutex
	calls       []string
	attached    map[string]Attachment
	failNext    error
	failPublish error // the next PublishPorts fails with it
}

func newFakeAttacher() *fakeAttacher {
	return &fakeAttacher{attached: map[string]Attachment{}}
}

func (a *fakeAttacher) AttachContainer(_ context.Context, at Attachment) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failNext != nil {
		err := a.failNext
		a.failNext = nil
		return err
	}
	a.calls = append(a.calls, fmt.Sprintf("attach %s as %s policy=%s pid=%d", at.ContainerID, at.Agent, at.Policy, at.Pid))
	a.attached[at.ContainerID] = at
	return nil
}

func (a *fakeAttacher) DetachContainer(_ context.Context, id string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, "detach "+id)
	delete(a.attached, id)
	return nil
}

func (a *fakeAttacher) PublishPorts(_ context.Context, agent string, specs []string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.failPublish != nil {
		err := a.failPublish
		a.failPublish = nil
		a.calls = append(a.calls, "publish "+agent+" failed")
		return err
	}
	a.calls = append(a.calls, "publish "+agent+" "+strings.Join(specs, ","))
	return nil
}

func (a *fakeAttacher) UnpublishPorts(_ context.Context, agent string, specs []string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, "unpublish "+agent+" "+strings.Join(specs, ","))
	return nil
}

func (a *fakeAttacher) log() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.calls...)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func writeResolv(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// startWatcher runs a Watcher against f until the test ends, and checks
// that Run returns and leaves no goroutine behind.
func startWatcher(t *testing.T, f *fakeEngine, at Attacher) *Watcher {
	t.Helper()
	before := runtime.NumGoroutine()
	w := NewWatcher(WatcherConfig{Client: f.client(), Attacher: at, MinBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	waitFor(t, "the event subscription", func() bool { return f.subscribers() == 1 && w.Connected() })
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run() = %v; want nil after cancel", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run() did not return after cancel")
		}
		// Idle HTTP connections hold two goroutines each; the check is
		// about the Watcher's own.
		f.srv.CloseClientConnections()
		deadline := time.Now().Add(2 * time.Second)
		for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := runtime.NumGoroutine(); n > before+2 {
			buf := make([]byte, 1<<16)
			t.Errorf("goroutines: %d before, %d after Run returned\n%s", before, n, buf[:runtime.Stack(buf, true)])
		}
	})
	return w
}

func TestWatcherAttachFollowsLifecycle(t *testing.T) {
	f := newFakeEngine(t)
	rc := writeResolv(t, "search corp.test\nnameserver 127.0.0.11\noptions ndots:0\n")
	f.add(&fakeContainer{ID: "c1", Name: "web", Pid: 100, StartedAt: "t1", NetworkMode: "none",
		Networks: []string{"none"}, ResolvConf: rc})
	at := newFakeAttacher()
	w := startWatcher(t, f, at)
	ctx := context.Background()

	a, err := w.Attach(ctx, "web", "", "coder", nil)
	if err != nil {
		t.Fatalf("Attach(web) = %v", err)
	}
	if a.Agent != "web" || a.Pid != 100 || a.Policy != "coder" {
		t.Errorf("Attach(web) = %+v; want agent web (the container's name), pid 100, policy coder", a)
	}
	b, _ := os.ReadFile(rc)
	if !strings.Contains(string(b), "nameserver 100.96.0.1") || strings.Contains(string(b), "\nnameserver 127.0.0.11") {
		t.Errorf("resolv.conf after attach = %q; want the gateway instead of 127.0.0.11", b)
	}
	if _, err := w.Attach(ctx, "web", "", "", nil); err == nil || !strings.Contains(err.Error(), "already attached") {
		t.Errorf("second Attach(web) = %v; want already attached", err)
	}

	// docker stop: die, then stop.
	f.set("c1", func(c *fakeContainer) { c.Running, c.Status = false, "exited" })
	f.emit("container", "die", "c1", nil)
	f.emit("container", "stop", "c1", nil)
	waitFor(t, "detach on stop", func() bool { return len(at.log()) == 2 })

	// docker start: a new PID, so a new namespace; resolv.conf rewritten again.
	os.WriteFile(rc, []byte("nameserver 127.0.0.11\n"), 0o644)
	f.set("c1", func(c *fakeContainer) { c.Running, c.Status, c.Pid, c.StartedAt = true, "running", 200, "t2" })
	f.emit("container", "start", "c1", nil)
	waitFor(t, "re-attach on start", func() bool { return len(at.log()) == 3 })
	b, _ = os.ReadFile(rc)
	if !strings.Contains(string(b), "nameserver 100.96.0.1") {
		t.Errorf("resolv.conf after restart = %q; want the gateway", b)
	}

	// docker restart while we look: die+start in one go, then a restart event.
	f.set("c1", func(c *fakeContainer) { c.Pid, c.StartedAt = 300, "t3" })
	f.emit("container", "restart", "c1", nil)
	waitFor(t, "re-attach on restart", func() bool { return len(at.log()) == 5 })
	// A repeated event for the same run changes nothing.
	f.emit("container", "start", "c1", nil)

	// docker rm.
	f.del("c1")
	f.emit("container", "destroy", "c1", nil)
	waitFor(t, "detach on destroy", func() bool { return len(at.log()) == 6 })
	waitFor(t, "forgotten", func() bool { return len(w.Tracked()) == 0 })

	want := []string{
		"attach c1 as web policy=coder pid=100",
		"detach c1",
		"attach c1 as web policy=coder pid=200",
		"detach c1",
		"attach c1 as web policy=coder pid=300",
		"detach c1",
	}
	if got := at.log(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("attacher calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestWatcherFollowsPodmanEvents: Podman's events, in the order its
// compatible API sends them (seen from Podman 4.3): `podman restart` sends
// restart first, while the old run is still there, then die and start;
// `podman rm` sends remove, where Docker sends destroy. Its event filter
// knows die as "died" (the fake filters as it does).
func TestWatcherFollowsPodmanEvents(t *testing.T) {
	f := newFakeEngine(t)
	f.podman = true
	rc := writeResolv(t, "nameserver 198.18.0.53\n")
	f.add(&fakeContainer{ID: "c1", Name: "web", Pid: 100, StartedAt: "t1", NetworkMode: "none", ResolvConf: rc})
	f.add(&fakeContainer{ID: "h1", Name: "clawnet-holder-a", Pid: 101, NetworkMode: "none", ResolvConf: rc,
		Labels: map[string]string{LabelRole: "holder", LabelAgent: "a"}, CreatedUnix: time.Now().Unix()})
	at := newFakeAttacher()
	w := startWatcher(t, f, at)
	ctx := context.Background()
	if _, err := w.Attach(ctx, "web", "", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Attach(ctx, "h1", "a", "", nil); err != nil {
		t.Fatal(err)
	}

	inspected := func() int { return f.countRequests("GET /containers/c1/json") }
	n := inspected()
	f.emit("container", "restart", "c1", nil) // the old run, still running
	waitFor(t, "the restart event handled", func() bool { return inspected() > n })
	f.set("c1", func(c *fakeContainer) { c.Running, c.Status = false, "stopping" })
	f.emit("container", "die", "c1", nil)
	waitFor(t, "detach on die", func() bool { return len(at.log()) == 3 })
	f.set("c1", func(c *fakeContainer) { c.Running, c.Status, c.Pid, c.StartedAt = true, "running", 200, "t2" })
	f.emit("container", "init", "c1", nil)
	f.emit("container", "start", "c1", nil)
	waitFor(t, "re-attach on start", func() bool { return len(at.log()) == 4 })

	f.del("c1")
	f.emit("container", "remove", "c1", nil)
	waitFor(t, "detach on remove", func() bool { return len(at.log()) == 5 })

	// The agent container of a `clawnet run` is removed: its holder goes.
	f.emit("container", "remove", "a1", map[string]string{"name": "a", LabelRole: "agent", LabelAgent: "a", LabelHolder: "h1"})
	waitFor(t, "holder removed and detached", func() bool { return len(at.log()) == 6 })
	waitFor(t, "forgotten", func() bool { return len(w.Tracked()) == 0 })
	want := []string{
		"attach c1 as web policy= pid=100",
		"attach h1 as a policy= pid=101",
		"detach c1",
		"attach c1 as web policy= pid=200",
		"detach c1",
		"detach h1",
	}
	if got := at.log(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("attacher calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestWatcherRefusesOtherNetworks(t *testing.T) {
	f := newFakeEngine(t)
	f.add(&fakeContainer{ID: "b1", Name: "bridged", Pid: 5, NetworkMode: "bridge", Networks: []string{"bridge"}})
	f.add(&fakeContainer{ID: "s1", Name: "stopped", Status: "exited", NetworkMode: "none", Networks: []string{"none"}})
	at := newFakeAttacher()
	w := NewWatcher(WatcherConfig{Client: f.client(), Attacher: at})
	ctx := context.Background()
	_, err := w.Attach(ctx, "bridged", "", "", nil)
	if err == nil || err.Error() != `container "bridged" uses network "bridge": run it with --network none (or use clawnet run)` {
		t.Errorf("Attach(bridged) = %v; want the one-line refusal", err)
	}
	if _, err := w.Attach(ctx, "stopped", "", "", nil); err == nil || !strings.Contains(err.Error(), "is not running") {
		t.Errorf("Attach(stopped) = %v; want not running", err)
	}
	if _, err := w.Attach(ctx, "ghost", "", "", nil); err == nil || err.Error() != `container "ghost" not found` {
		t.Errorf("Attach(ghost) = %v; want not found", err)
	}
	if got := at.log(); len(got) != 0 {
		t.Errorf("attacher calls = %v; want none", got)
	}
}

func TestWatcherDetachesWhenNetworkConnected(t *testing.T) {
	f := newFakeEngine(t)
	f.add(&fakeContainer{ID: "c1", Name: "web", Pid: 100, NetworkMode: "none", Networks: []string{"none"},
		ResolvConf: writeResolv(t, "nameserver 198.18.0.53\n")})
	at := newFakeAttacher()
	w := startWatcher(t, f, at)
	if _, err := w.Attach(context.Background(), "c1", "agent-x", "", nil); err != nil {
		t.Fatal(err)
	}
	f.set("c1", func(c *fakeContainer) { c.Networks = append(c.Networks, "bridge") })
	f.emit("network", "connect", "netid", map[string]string{"container": "c1", "name": "bridge"})
	waitFor(t, "detach on network connect", func() bool { return len(at.log()) == 2 })
	if got := at.log()[1]; got != "detach c1" {
		t.Errorf("second call = %q; want detach c1", got)
	}
	waitFor(t, "forgotten", func() bool { return len(w.Tracked()) == 0 })
}

// TestWatcherAttachKeepsAgentOnDNSFailure: DNS trouble never costs the
// agent its network: the attach stands and the trouble is logged.
func TestWatcherAttachKeepsAgentOnDNSFailure(t *testing.T) {
	f := newFakeEngine(t)
	// A directory where the resolv.conf should be: not a regular file.
	f.add(&fakeContainer{ID: "c1", Name: "web", Pid: 100, NetworkMode: "none", Networks: []string{"none"},
		ResolvConf: t.TempDir()})
	at := newFakeAttacher()
	var logs strings.Builder
	w := NewWatcher(WatcherConfig{Client: f.client(), Attacher: at,
		Logger: hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})})
	a, err := w.Attach(context.Background(), "web", "", "", nil)
	if err != nil || a.Agent != "web" {
		t.Fatalf("Attach with a broken resolv.conf = %+v, %v; want it attached", a, err)
	}
	if got := at.log(); len(got) != 1 || !strings.HasPrefix(got[0], "attach c1") {
		t.Errorf("attacher calls = %v; want one attach and no detach", got)
	}
	if len(w.Tracked()) != 1 {
		t.Errorf("Tracked() = %v; want the container followed", w.Tracked())
	}
	if !strings.Contains(logs.String(), "name lookups will fail") || !strings.Contains(logs.String(), "is a directory") {
		t.Errorf("log = %q; want the DNS trouble said", logs.String())
	}
}

func TestWatcherReconnectResyncs(t *testing.T) {
	f := newFakeEngine(t)
	rc := writeResolv(t, "nameserver 198.18.0.53\n")
	f.add(&fakeContainer{ID: "c1", Name: "web", Pid: 100, StartedAt: "t1", NetworkMode: "none", Networks: []string{"none"}, ResolvConf: rc})
	f.add(&fakeContainer{ID: "c2", Name: "db", Pid: 101, StartedAt: "t1", NetworkMode: "none", Networks: []string{"none"}, ResolvConf: rc})
	f.add(&fakeContainer{ID: "c3", Name: "live", Pid: 102, StartedAt: "t1", NetworkMode: "none", Networks: []string{"none"}, ResolvConf: rc})
	at := newFakeAttacher()
	w := startWatcher(t, f, at)
	ctx := context.Background()
	for _, n := range []string{"web", "db", "live"} {
		if _, err := w.Attach(ctx, n, "", "p", nil); err != nil {
			t.Fatal(err)
		}
	}
	// The engine goes away; while it is gone c1 restarts, c2 is removed and
	// c3 keeps running (live-restore). Two failed reconnections first.
	f.mu.Lock()
	f.eventsErr = 2
	f.mu.Unlock()
	f.set("c1", func(c *fakeContainer) { c.Pid, c.StartedAt = 200, "t2" })
	f.del("c2")
	f.dropSubscribers()
	waitFor(t, "reconnection", func() bool { return f.subscribers() == 1 && w.Connected() })
	waitFor(t, "resync", func() bool { return len(at.log()) == 6 })
	got := strings.Join(at.log()[3:], "\n")
	for _, want := range []string{"detach c1", "attach c1 as web policy=p pid=200", "detach c2"} {
		if !strings.Contains(got, want) {
			t.Errorf("calls after reconnect:\n%s\nwant %q among them", got, want)
		}
	}
	if strings.Contains(got, "c3") {
		t.Errorf("calls after reconnect touched the unchanged c3:\n%s", got)
	}
	if n := len(w.Tracked()); n != 2 {
		t.Errorf("Tracked() has %d containers; want 2 (c2 is gone)", n)
	}
}

func TestWatcherRemovesHolderWithItsAgent(t *testing.T) {
	f := newFakeEngine(t)
	f.add(&fakeContainer{ID: "h1", Name: "clawnet-holder-a", Pid: 100, NetworkMode: "none", Networks: []string{"none"},
		Labels: map[string]string{LabelRole: "holder", LabelAgent: "a"}, CreatedUnix: time.Now().Unix(), ResolvConf: writeResolv(t, "nameserver 198.18.0.53\n")})
	at := newFakeAttacher()
	w := startWatcher(t, f, at)
	if _, err := w.Attach(context.Background(), "h1", "a", "p", nil); err != nil {
		t.Fatal(err)
	}
	// The agent's container (which joined h1's namespace) is removed.
	f.emit("container", "destroy", "a1", map[string]string{"name": "a", LabelRole: "agent", LabelAgent: "a", LabelHolder: "h1"})
	waitFor(t, "holder removal and detach", func() bool { return len(at.log()) == 2 })
	f.mu.Lock()
	removed := append([]string(nil), f.removed...)
	f.mu.Unlock()
	if len(removed) != 1 || removed[0] != "h1" {
		t.Errorf("removed = %v; want [h1]", removed)
	}
	waitFor(t, "forgotten", func() bool { return len(w.Tracked()) == 0 })
}

func TestWatcherReapsOrphanHolders(t *testing.T) {
	f := newFakeEngine(t)
	old := time.Now().Add(-time.Hour).Unix()
	f.add(&fakeContainer{ID: "orphan", Name: "clawnet-holder-gone", Labels: map[string]string{LabelRole: "holder"}, CreatedUnix: old})
	f.add(&fakeContainer{ID: "fresh", Name: "clawnet-holder-new", Labels: map[string]string{LabelRole: "holder"}, CreatedUnix: time.Now().Unix()})
	f.add(&fakeContainer{ID: "used", Name: "clawnet-holder-b", Status: "exited", Labels: map[string]string{LabelRole: "holder"}, CreatedUnix: old})
	f.add(&fakeContainer{ID: "b1", Name: "b", Labels: map[string]string{LabelRole: "agent", LabelHolder: "used"}})
	startWatcher(t, f, newFakeAttacher())
	waitFor(t, "reap", func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.removed) > 0
	})
	time.Sleep(50 * time.Millisecond)
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.removed) != 1 || f.removed[0] != "orphan" {
		t.Errorf("removed = %v; want only the old orphan", f.removed)
	}
}

func TestResolver(t *testing.T) {
	f := newFakeEngine(t)
	rc := writeResolv(t, "nameserver 127.0.0.11\n")
	f.add(&fakeContainer{ID: "c1", Name: "web", Pid: 100, NetworkMode: "none", Networks: []string{"none"}, ResolvConf: rc})
	f.add(&fakeContainer{ID: "b1", Name: "bridged", Pid: 5, NetworkMode: "bridge", Networks: []string{"bridge"}})
	r := Resolver{Client: f.client()}
	id, name, pid, notes, err := r.Resolve(context.Background(), "web")
	wantNote := "DNS: " + rc + " named resolvers the agent cannot reach (127.0.0.11); it now names the gateway 100.96.0.1"
	if err != nil || id != "c1" || name != "web" || pid != 100 || len(notes) != 1 || notes[0] != wantNote {
		t.Errorf("Resolve(web) = %q, %q, %d, %q, %v; want c1, web, 100, %q", id, name, pid, notes, err, wantNote)
	}
	if b, _ := os.ReadFile(rc); !strings.Contains(string(b), "nameserver 100.96.0.1") {
		t.Errorf("resolv.conf after Resolve = %q; want the gateway", b)
	}
	// DNS trouble is a note, never a refusal.
	f.add(&fakeContainer{ID: "d1", Name: "odd", Pid: 100, NetworkMode: "none", ResolvConf: t.TempDir()})
	if _, _, _, notes, err := r.Resolve(context.Background(), "odd"); err != nil || len(notes) != 1 || !strings.Contains(notes[0], "is a directory") {
		t.Errorf("Resolve(odd) = %q, %v; want attached with a DNS note", notes, err)
	}
	_, _, _, _, err = r.Resolve(context.Background(), "bridged")
	if err == nil || err.Error() != `container "bridged" uses network "bridge": run it with --network none (or use clawnet run)` {
		t.Errorf("Resolve(bridged) = %v", err)
	}
}

func TestWatcherAdoptsRunningHolders(t *testing.T) {
	f := newFakeEngine(t)
	rc := writeResolv(t, "nameserver 127.0.0.11\n")
	old := time.Now().Add(-time.Hour).Unix()
	f.add(&fakeContainer{ID: "h1", Name: "clawnet-holder-a", Pid: 77, NetworkMode: "none", Networks: []string{"none"}, ResolvConf: rc,
		Labels: map[string]string{LabelRole: "holder", LabelAgent: "a", LabelPolicy: "coder"}, CreatedUnix: old})
	f.add(&fakeContainer{ID: "a1", Name: "a", NetworkMode: "container:h1", Labels: map[string]string{LabelRole: "agent", LabelHolder: "h1"}})
	at := newFakeAttacher()
	w := startWatcher(t, f, at)
	waitFor(t, "adoption", func() bool { return len(at.log()) == 1 })
	if got := at.log()[0]; got != "attach h1 as a policy=coder pid=77" {
		t.Errorf("adoption = %q; want the holder attached with its recorded name and policy", got)
	}
	if tr := w.Tracked(); len(tr) != 1 || tr[0].ContainerID != "h1" {
		t.Errorf("Tracked() = %+v; want h1 followed", tr)
	}
}

// since returns the attacher's calls after the first n, joined by newlines.
func (a *fakeAttacher) since(n int) string {
	return strings.Join(a.log()[n:], "\n")
}

func TestWatcherPublishesAtEveryAttach(t *testing.T) {
	f := newFakeEngine(t)
	rc := writeResolv(t, "nameserver 198.18.0.53\n")
	f.add(&fakeContainer{ID: "c1", Name: "web", Pid: 100, StartedAt: "t1", NetworkMode: "none", Networks: []string{"none"}, ResolvConf: rc})
	f.add(&fakeContainer{ID: "c2", Name: "taken", Pid: 101, StartedAt: "t1", NetworkMode: "none", Networks: []string{"none"}, ResolvConf: rc})
	at := newFakeAttacher()
	w := startWatcher(t, f, at)
	ctx := context.Background()

	// A port that cannot be published fails the attach and attaches nothing.
	at.mu.Lock()
	at.failPublish = errors.New("conflict: host port 8081 is already in use")
	at.mu.Unlock()
	_, err := w.Attach(ctx, "taken", "", "", []string{"8081:80"})
	if err == nil || err.Error() != `container "taken": conflict: host port 8081 is already in use` {
		t.Errorf("Attach with a taken port = %v; want the publish error", err)
	}
	if got, want := at.since(0), "attach c2 as taken policy= pid=101\npublish taken failed\ndetach c2"; got != want {
		t.Errorf("attacher calls:\n%s\nwant:\n%s", got, want)
	}
	if len(w.Tracked()) != 0 {
		t.Errorf("Tracked() = %+v; want nothing after a failed publish", w.Tracked())
	}

	n := len(at.log())
	a, err := w.Attach(ctx, "web", "", "", []string{"8080:80", "127.0.0.1:9000:9000/tcp"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(a.Publish, " ") != "8080:80 127.0.0.1:9000:9000/tcp" {
		t.Errorf("Attach().Publish = %q", a.Publish)
	}
	// Stopped: detaching closes the ports with the agent. Started: a new
	// namespace, attached and published again.
	f.set("c1", func(c *fakeContainer) { c.Running, c.Status = false, "exited" })
	f.emit("container", "die", "c1", nil)
	waitFor(t, "detach on stop", func() bool { return len(at.log()) == n+3 })
	f.set("c1", func(c *fakeContainer) { c.Running, c.Status, c.Pid, c.StartedAt = true, "running", 200, "t2" })
	f.emit("container", "start", "c1", nil)
	waitFor(t, "re-attach on start", func() bool { return len(at.log()) == n+5 })
	want := []string{
		"attach c1 as web policy= pid=100",
		"publish web 8080:80,127.0.0.1:9000:9000/tcp",
		"detach c1",
		"attach c1 as web policy= pid=200",
		"publish web 8080:80,127.0.0.1:9000:9000/tcp",
	}
	if got := at.since(n); got != strings.Join(want, "\n") {
		t.Errorf("attacher calls:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}

	// A restart whose ports cannot be opened again keeps the agent attached
	// (it would have no network at all otherwise) and tries again at the
	// container's next event.
	at.mu.Lock()
	at.failPublish = errors.New("conflict: host port 8080 is already in use")
	at.mu.Unlock()
	f.set("c1", func(c *fakeContainer) { c.Pid, c.StartedAt = 300, "t3" })
	f.emit("container", "restart", "c1", nil)
	waitFor(t, "re-attach on restart", func() bool { return len(at.log()) == n+8 })
	f.emit("container", "unpause", "c1", nil)
	waitFor(t, "publish retried", func() bool { return len(at.log()) == n+9 })
	want = append(want, "detach c1", "attach c1 as web policy= pid=300", "publish web failed",
		"publish web 8080:80,127.0.0.1:9000:9000/tcp")
	if got := at.since(n); got != strings.Join(want, "\n") {
		t.Errorf("attacher calls:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
	if tr := w.Tracked(); len(tr) != 1 || len(tr[0].Publish) != 2 {
		t.Errorf("Tracked() = %+v; want web with its two ports", tr)
	}
}

// TestWatcherHolderPortsFollowAgentContainer: a `clawnet run` holder stays
// attached while its agent container stops and starts, and its ports follow
// that container: closed while it does not run, open again when it starts,
// also when the events were missed while the engine was away.
func TestWatcherHolderPortsFollowAgentContainer(t *testing.T) {
	f := newFakeEngine(t)
	holderLabels := map[string]string{LabelRole: "holder", LabelAgent: "a", LabelPolicy: "p", LabelPublish: "8080:80"}
	f.add(&fakeContainer{ID: "h1", Name: "clawnet-holder-a", Pid: 100, StartedAt: "t1", NetworkMode: "none", Networks: []string{"none"},
		Labels: holderLabels, CreatedUnix: time.Now().Unix(), ResolvConf: writeResolv(t, "nameserver 198.18.0.53\n")})
	at := newFakeAttacher()
	w := startWatcher(t, f, at)
	ctx := context.Background()

	// clawnet run attaches the holder before the agent container exists:
	// the ports are claimed at once.
	if _, err := w.Attach(ctx, "h1", "a", "p", []string{"8080:80"}); err != nil {
		t.Fatal(err)
	}
	agentLabels := map[string]string{LabelRole: "agent", LabelAgent: "a", LabelHolder: "h1"}
	f.add(&fakeContainer{ID: "a1", Name: "a", Pid: 200, StartedAt: "t1", NetworkMode: "container:h1", Labels: agentLabels})
	f.emit("container", "start", "a1", agentLabels)

	// docker stop a: kill, die, stop.
	f.set("a1", func(c *fakeContainer) { c.Running, c.Status = false, "exited" })
	for _, ev := range []string{"kill", "die", "stop"} {
		f.emit("container", ev, "a1", agentLabels)
	}
	waitFor(t, "unpublish on stop", func() bool { return len(at.log()) == 3 })
	// docker start a.
	f.set("a1", func(c *fakeContainer) { c.Running, c.Status, c.Pid, c.StartedAt = true, "running", 201, "t2" })
	f.emit("container", "start", "a1", agentLabels)
	waitFor(t, "publish on start", func() bool { return len(at.log()) == 4 })

	// The engine goes away; meanwhile the agent container stops.
	f.set("a1", func(c *fakeContainer) { c.Running, c.Status = false, "exited" })
	f.dropSubscribers()
	waitFor(t, "unpublish at resync", func() bool { return len(at.log()) == 5 })
	// Another container's events change nothing.
	f.emit("container", "start", "x1", map[string]string{LabelRole: "agent", LabelHolder: "other"})

	want := []string{
		"attach h1 as a policy=p pid=100",
		"publish a 8080:80",
		"unpublish a 8080:80",
		"publish a 8080:80",
		"unpublish a 8080:80",
	}
	time.Sleep(50 * time.Millisecond)
	if got := at.since(0); got != strings.Join(want, "\n") {
		t.Errorf("attacher calls:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}

	// docker rm a: the holder goes, and its agent with it.
	f.del("a1")
	f.emit("container", "destroy", "a1", agentLabels)
	waitFor(t, "detach with the holder", func() bool { return len(at.log()) == 6 })
	if got := at.log()[5]; got != "detach h1" {
		t.Errorf("last call = %q; want detach h1", got)
	}
	waitFor(t, "forgotten", func() bool { return len(w.Tracked()) == 0 })
}

// TestWatcherAdoptsHoldersWithTheirPorts: a clawnetd that starts while
// `clawnet run` holders run attaches them again and publishes the ports
// recorded on them, but only for an agent container that runs; the other's
// open when it starts. A port that cannot be opened does not keep the agent
// from its network.
func TestWatcherAdoptsHoldersWithTheirPorts(t *testing.T) {
	f := newFakeEngine(t)
	rc := writeResolv(t, "nameserver 198.18.0.53\n")
	old := time.Now().Add(-time.Hour).Unix()
	for _, h := range []struct{ id, agent, publish, state string }{
		{"h1", "up", "127.0.0.1:8080:80,9000:9000/tcp", "running"},
		{"h2", "down", "8081:80", "exited"},
	} {
		f.add(&fakeContainer{ID: h.id, Name: HolderName(h.agent), Pid: 77, NetworkMode: "none", Networks: []string{"none"}, ResolvConf: rc,
			Labels: map[string]string{LabelRole: "holder", LabelAgent: h.agent, LabelPolicy: "p", LabelPublish: h.publish}, CreatedUnix: old})
		f.add(&fakeContainer{ID: "a-" + h.id, Name: h.agent, Pid: 78, Status: h.state, Running: h.state == "running", NetworkMode: "container:" + h.id,
			Labels: map[string]string{LabelRole: "agent", LabelAgent: h.agent, LabelHolder: h.id}})
	}
	at := newFakeAttacher()
	w := startWatcher(t, f, at)
	waitFor(t, "adoption", func() bool { return len(at.log()) == 3 })
	got := at.since(0)
	for _, want := range []string{"attach h1 as up policy=p pid=77", "publish up 127.0.0.1:8080:80,9000:9000/tcp", "attach h2 as down policy=p pid=77"} {
		if !strings.Contains(got, want) {
			t.Errorf("adoption calls:\n%s\nwant %q among them", got, want)
		}
	}
	if strings.Index(got, "attach h1") > strings.Index(got, "publish up") {
		t.Errorf("adoption calls:\n%s\nwant the ports published after the attach", got)
	}
	downLabels := map[string]string{LabelRole: "agent", LabelHolder: "h2"}
	at.mu.Lock()
	at.failPublish = errors.New("conflict: host port 8081 is already in use")
	at.mu.Unlock()
	f.set("a-h2", func(c *fakeContainer) { c.Running, c.Status = true, "running" })
	f.emit("container", "start", "a-h2", downLabels)
	waitFor(t, "a failed publish", func() bool { return len(at.log()) == 4 })
	f.emit("container", "restart", "a-h2", downLabels)
	waitFor(t, "publish retried", func() bool { return len(at.log()) == 5 })
	if got := at.since(3); got != "publish down failed\npublish down 8081:80" {
		t.Errorf("calls after the agent container started:\n%s\nwant a failed publish, then one that worked", got)
	}
	if n := len(w.Tracked()); n != 2 {
		t.Errorf("Tracked() has %d containers; want both holders", n)
	}
}
