package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/tun"
)

// logBuffer is a daemon log the test reads while the gateway writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the log lines that contain every one of words.
func (l *logBuffer) lines(words ...string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		ok := line != ""
		for _, w := range words {
			ok = ok && strings.Contains(line, w)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// stateGateway builds a gateway as clawnetd does, keeping its state in
// dir. Its close function may be called early (a restart); t closes it at
// the end otherwise.
func stateGateway(t *testing.T, dir string) (*Gateway, *logBuffer, func()) {
	t.Helper()
	g, log, err := newStateGateway(t, dir)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	closeG := func() { once.Do(g.Close) }
	t.Cleanup(closeG)
	return g, log, closeG
}

func newStateGateway(t *testing.T, dir string) (*Gateway, *logBuffer, error) {
	t.Helper()
	policies := t.TempDir()
	if err := os.WriteFile(filepath.Join(policies, "coder.yaml"), []byte(apiTestPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.PolicyDir = policies
	cfg.DNS.Upstream = Upstream{Servers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}}
	log := &logBuffer{}
	g, err := New(Options{Config: cfg, StateDir: dir, Log: hclog.New(&hclog.LoggerOptions{Output: log, JSONFormat: true})})
	return g, log, err
}

func readRecords(t *testing.T, dir string) *stateFile {
	t.Helper()
	f, err := readStateFile(filepath.Join(dir, stateFileName))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func writeState(t *testing.T, dir string, f stateFile) {
	t.Helper()
	data, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, stateFileName), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func testRecord(name string, idx int) agentRecord {
	return agentRecord{
		Name: name, Policy: "coder", AddrIndex: idx, Addresses: []string{"100.96.0." + strconv.Itoa(idx) + "/16"},
		Target:     targetRecord{Kind: targetNetns, Path: "/run/netns/" + name, Netns: fmt.Sprintf("net:[4:%d]", 4026532000+idx), Cookie: uint64(1000 + idx)},
		Published:  []string{"127.0.0.1:8080:80/tcp"},
		AttachedAt: time.Date(2025, 3, 4, 5, 6, 7, 891011121, time.UTC),
	}
}

// TestStateRoundTrip: what one gateway records, the next one reads back
// whole, from a root-only file with a version.
func TestStateRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	st, err := openState(dir)
	if err != nil {
		t.Fatal(err)
	}
	a, b := testRecord("a", 7), testRecord("b", 3)
	b.Target = targetRecord{Kind: targetPID, PID: 4242, Netns: "net:[4:4026532999]"}
	b.Force, b.Published = true, nil
	if err := st.change(func(m map[string]agentRecord) bool { m["a"], m["b"] = a, b; return true }); err != nil {
		t.Fatal(err)
	}
	st.close()
	if err := st.change(func(map[string]agentRecord) bool { t.Error("change ran after close"); return true }); err != nil {
		t.Error(err)
	}

	for path, mode := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, filepath.Join(dir, stateFileName): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode() != mode {
			t.Errorf("%s: mode %v (%v), want %v", path, fi.Mode(), err, mode)
		}
	}
	raw, _ := os.ReadFile(filepath.Join(dir, stateFileName))
	var generic map[string]any
	if err := json.Unmarshal(raw, &generic); err != nil || generic["version"] != float64(stateVersion) || generic["boot_id"] != bootID() {
		t.Errorf("state file lacks version %d and this boot's ID:\n%s", stateVersion, raw)
	}

	st2, err := openState(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st2.close()
	if len(st2.records) != 2 || len(st2.stale) != 0 {
		t.Fatalf("read back %d records (%d stale), want 2", len(st2.records), len(st2.stale))
	}
	for _, want := range []agentRecord{a, b} {
		got := st2.records[want.Name]
		if !got.AttachedAt.Equal(want.AttachedAt) {
			t.Errorf("%s: attached_at %v, want %v", want.Name, got.AttachedAt, want.AttachedAt)
		}
		got.AttachedAt = want.AttachedAt
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("read back %+v\nwant       %+v", got, want)
		}
	}
}

// TestStateAtomicWrite: a write that fails leaves the last file as it was
// and no temporary file; a temporary file left by a crash is removed at the
// next start and never read.
func TestStateAtomicWrite(t *testing.T) {
	dir := t.TempDir()
	st, err := openState(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer st.close()
	if err := st.change(func(m map[string]agentRecord) bool { m["a"] = testRecord("a", 2); return true }); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, stateFileName)
	before, _ := os.ReadFile(path)

	syncFile = func(*os.File) error { return errors.New("disk on fire") }
	err = st.change(func(m map[string]agentRecord) bool { m["b"] = testRecord("b", 3); return true })
	syncFile = (*os.File).Sync
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("write with a failing fsync = %v, want its error", err)
	}
	if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
		t.Errorf("a failed write changed the file:\n%s\nwas:\n%s", after, before)
	}
	if temps, _ := filepath.Glob(filepath.Join(dir, stateTempPrefix+"*")); len(temps) != 0 {
		t.Errorf("a failed write left %v", temps)
	}

	// A crash between create and rename.
	st.close()
	crash := filepath.Join(dir, stateTempPrefix+"12345")
	if err := os.WriteFile(crash, []byte(`{"version": 1, "agents": [{"half`), 0o600); err != nil {
		t.Fatal(err)
	}
	st2, err := openState(dir)
	if err != nil {
		t.Fatalf("start after a crash mid-write: %v", err)
	}
	defer st2.close()
	if _, err := os.Stat(crash); !os.IsNotExist(err) {
		t.Errorf("the crash's temporary file is still there (%v)", err)
	}
	if len(st2.records) != 1 || st2.records["a"].Name != "a" {
		t.Errorf("after a crash mid-write the records are %v, want the last written (a)", st2.records)
	}
}

// TestStateBadFileRefused: a file this clawnetd cannot read is an error at
// start that names it and says why, in one line, and it is left untouched.
func TestStateBadFileRefused(t *testing.T) {
	good := func(mod func(*agentRecord)) string {
		r := testRecord("a", 2)
		mod(&r)
		b, _ := json.Marshal(stateFile{Version: stateVersion, Agents: []agentRecord{r}})
		return string(b)
	}
	twice, _ := json.Marshal(stateFile{Version: stateVersion, Agents: []agentRecord{testRecord("a", 2), testRecord("a", 3)}})
	tests := []struct{ name, content, want string }{
		{"empty", "", "empty"},
		{"not JSON", "{version: 1", "not a JSON object with a version"},
		{"no version", `{"agents": []}`, "no version"},
		{"older version", `{"version": 0, "agents": []}`, "version 0, and this clawnetd reads version 1 only"},
		{"newer version", `{"version": 2, "agents": [], "groups": {}}`, "version 2, and this clawnetd reads version 1 only"},
		{"unknown key", `{"version": 1, "agents": [], "extra": true}`, `unknown field "extra"`},
		{"bad kind", good(func(r *agentRecord) { r.Target.Kind = "container" }), `agent 1 ("a"): unknown target kind "container"`},
		{"relative path", good(func(r *agentRecord) { r.Target.Path = "netns/a" }), "not an absolute path"},
		{"no identity", good(func(r *agentRecord) { r.Target.Netns = "" }), "no namespace identity"},
		{"bad index", good(func(r *agentRecord) { r.AddrIndex = 1 }), "bad addr_index 1"},
		{"bad name", good(func(r *agentRecord) { r.Name = "a b" }), "bad name"},
		{"no policy", good(func(r *agentRecord) { r.Policy = "" }), "no policy"},
		{"twice", string(twice), "a second record of the same name or namespace"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, stateFileName)
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			st, err := openState(dir)
			if err == nil {
				st.close()
				t.Fatalf("openState accepted %q", tt.content)
			}
			msg := err.Error()
			if !strings.Contains(msg, path) || !strings.Contains(msg, tt.want) || !strings.Contains(msg, "left as it is") || strings.Contains(msg, "\n") {
				t.Errorf("openState = %q; want one line naming %s, %q, and that the file is left as it is", msg, path, tt.want)
			}
			if after, _ := os.ReadFile(path); string(after) != tt.content {
				t.Errorf("the refused file was changed to %q", after)
			}
			// The refusal released the directory: fixing the file is enough.
			os.Remove(path)
			st, err = openState(dir)
			if err != nil {
				t.Fatalf("after the file was moved away: %v", err)
			}
			st.close()
		})
	}

	// A gateway is not built on such a file: clawnetd stops at start.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, stateFileName), []byte(`{"version": 9}`), 0o600)
	if g, _, err := newStateGateway(t, dir); err == nil {
		g.Close()
		t.Error("New built a gateway on a state file of version 9")
	}
}

// TestStateDirLock: two gateways never share a state directory.
func TestStateDirLock(t *testing.T) {
	dir := t.TempDir()
	st, err := openState(dir)
	if err != nil {
		t.Fatal(err)
	}
	_, err = openState(dir)
	want := fmt.Sprintf("state_dir %s is in use by another clawnetd (pid %d)", dir, os.Getpid())
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("second openState = %v, want %q", err, want)
	}
	st.close()
	st, err = openState(dir)
	if err != nil {
		t.Fatalf("openState after the first closed: %v", err)
	}
	st.close()

	if st, err := openState(""); st != nil || err != nil {
		t.Errorf(`openState("") = %v, %v; want no state and no error`, st, err)
	}
	if _, err := ParseConfig("c.yaml", []byte("version: v1\nstate_dir: var/lib/clawnet\n")); err == nil || !strings.Contains(err.Error(), "state_dir must be an absolute path") {
		t.Errorf("relative state_dir: %v", err)
	}
	if DefaultConfig().StateDir != "/var/lib/clawnet" {
		t.Errorf("default state_dir %q", DefaultConfig().StateDir)
	}
}

// TestAddrPoolAim: the index aimed at is the one handed out next, and one
// that is taken or outside the pool is refused.
func TestAddrPoolAim(t *testing.T) {
	p := newAddrPool(netip.MustParsePrefix("100.96.0.0/24"), netip.MustParsePrefix("fd00::/64"))
	if err := p.aim(77); err != nil {
		t.Fatal(err)
	}
	if idx, err := p.get(); idx != 77 || err != nil {
		t.Errorf("get after aim(77) = %d, %v", idx, err)
	}
	for _, idx := range []int{77, 0, 1, 255} {
		if err := p.aim(idx); err == nil {
			t.Errorf("aim(%d) accepted", idx)
		}
	}
}

// TestRestoreDrops: every record whose target is gone, or no longer the
// same namespace, or whose policy is gone, is logged (one line each, with
// why) and dropped from the file; nothing is attached. So is every record
// of a file from an earlier boot.
func TestRestoreDrops(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(t.TempDir(), "plain")
	os.WriteFile(plain, nil, 0o600)
	self, err := tun.OpenNetns("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	selfID := self.ID()
	self.Close()
	recs := map[string]func(*agentRecord){
		"gone-path":  func(r *agentRecord) { r.Target.Path = "/nonexistent/netns/x" },
		"gone-pid":   func(r *agentRecord) { r.Target = targetRecord{Kind: targetPID, PID: 1 << 30, Netns: r.Target.Netns} },
		"plain-file": func(r *agentRecord) { r.Target.Path = plain },
		"other-ns":   func(r *agentRecord) { r.Target.Path = "/proc/self/ns/net" },
		"other-cookie": func(r *agentRecord) {
			r.Target.Path, r.Target.Netns = "/proc/self/ns/net", selfID
		},
		"no-policy": func(r *agentRecord) { r.Policy = "vanished" },
	}
	reasons := map[string]string{
		"gone-path":    "/nonexistent/netns/x is gone",
		"gone-pid":     fmt.Sprintf("process %d is gone", 1<<30),
		"plain-file":   "is not a network namespace any more",
		"other-ns":     "netns:/proc/self/ns/net names another namespace now",
		"other-cookie": "", // the host's namespace: another cookie, or no way to enter it unprivileged
		"no-policy":    `its policy \"vanished\" is not defined any more`,
	}
	f := stateFile{Version: stateVersion, BootID: bootID()}
	i := 2
	for name, mod := range recs {
		r := testRecord(name, i)
		r.Published = nil
		mod(&r)
		f.Agents = append(f.Agents, r)
		i++
	}
	writeState(t, dir, f)
	g, log, _ := stateGateway(t, dir)
	attached, dropped := g.Restore(context.Background())
	if attached != 0 || dropped != len(recs) {
		t.Errorf("Restore = %d attached, %d dropped; want 0 and %d", attached, dropped, len(recs))
	}
	for name, why := range reasons {
		lines := log.lines(`"agent":"`+name+`"`, "recorded agent not attached again", why)
		if len(lines) != 1 {
			t.Errorf("%s: %d log lines saying it was not attached again because %q, want 1:\n%s", name, len(lines), why, strings.Join(log.lines(), "\n"))
		}
	}
	if as := g.Agents(); len(as) != 0 {
		t.Errorf("agents after a restore of nothing: %v", as)
	}
	if left := readRecords(t, dir); len(left.Agents) != 0 {
		t.Errorf("dropped records still in the file: %+v", left.Agents)
	}

	// A file from an earlier boot.
	dir = t.TempDir()
	writeState(t, dir, stateFile{Version: stateVersion, BootID: "another-boot", Agents: []agentRecord{testRecord("old", 2)}})
	g, log, _ = stateGateway(t, dir)
	if attached, dropped := g.Restore(context.Background()); attached != 0 || dropped != 1 {
		t.Errorf("Restore of an earlier boot's file = %d, %d; want 0, 1", attached, dropped)
	}
	if len(log.lines(`"agent":"old"`, "earlier boot")) != 1 {
		t.Errorf("no log line for the earlier boot's agent:\n%s", strings.Join(log.lines(), "\n"))
	}
	if left := readRecords(t, dir); len(left.Agents) != 0 || left.BootID != bootID() {
		t.Errorf("after the restore the file is %+v, want no agents and this boot", left)
	}
}

// requireAttach skips a test that attaches real namespaces without root.
func requireAttach(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("attaching a namespace needs root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no /dev/net/tun: %v", err)
	}
}

func linksOfPID(t *testing.T, pid int) []string {
	t.Helper()
	ns, err := tun.NetnsOfPID(pid)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	links, err := tun.Links(ns)
	if err != nil {
		t.Fatal(err)
	}
	return links
}

// TestRestoreReattaches: a gateway started on the state of one that
// stopped attaches the same agents again (by PID and by path), with their
// names, policies, addresses and since-times, and keeps recording them.
func TestRestoreReattaches(t *testing.T) {
	requireAttach(t)
	dir := t.TempDir()
	pidA, pidB, pidC := otherNetnsPID(t), otherNetnsPID(t), otherNetnsPID(t)
	g1, _, close1 := stateGateway(t, dir)
	ctx := context.Background()
	// c takes the first addresses and leaves: a restart handing addresses
	// out afresh would give them to a.
	for _, req := range []control.AttachRequest{
		{Name: "c", PID: pidC},
		{Name: "a", PID: pidA, Policy: "coder"},
		{Name: "b", Netns: fmt.Sprintf("/proc/%d/ns/net", pidB)},
	} {
		if _, err := g1.Attach(ctx, req); err != nil {
			t.Fatalf("attach %s: %v", req.Name, err)
		}
	}
	if err := g1.Detach("c"); err != nil {
		t.Fatal(err)
	}
	before := g1.Agents()
	if f := readRecords(t, dir); len(f.Agents) != 2 || f.Agents[0].Name != "a" || f.Agents[1].Name != "b" || f.Agents[0].Target.Cookie == 0 {
		t.Fatalf("recorded %+v, want a and b with their namespaces' cookies", f.Agents)
	}
	close1()
	if links := linksOfPID(t, pidA); !slices.Equal(links, []string{"lo"}) {
		t.Fatalf("after the gateway stopped, a's namespace has %v", links)
	}

	g2, log, _ := stateGateway(t, dir)
	if attached, dropped := g2.Restore(ctx); attached != 2 || dropped != 0 {
		t.Fatalf("Restore = %d attached, %d dropped; want 2, 0; log:\n%s", attached, dropped, strings.Join(log.lines(), "\n"))
	}
	after := g2.Agents()
	if len(after) != 2 {
		t.Fatalf("agents after the restore: %+v", after)
	}
	for i, a := range after {
		b := before[i]
		if a.Name != b.Name || a.Policy != b.Policy || a.Target != b.Target || !slices.Equal(a.Addresses, b.Addresses) || !a.AttachedAt.Equal(b.AttachedAt) {
			t.Errorf("attached again as %+v\nwas                   %+v", a, b)
		}
		if len(log.lines(`"agent":"`+a.Name+`"`, "agent attached again")) != 1 {
			t.Errorf("no log line for %s attached again", a.Name)
		}
	}
	for _, pid := range []int{pidA, pidB} {
		if links := linksOfPID(t, pid); !slices.Contains(links, g2.cfg.Network.Interface) {
			t.Errorf("namespace of %d has %v after the restore", pid, links)
		}
	}
	// Still recorded: a detach now is remembered.
	if err := g2.Detach("b"); err != nil {
		t.Fatal(err)
	}
	if f := readRecords(t, dir); len(f.Agents) != 1 || f.Agents[0].Name != "a" || !f.Agents[0].AttachedAt.Equal(before[0].AttachedAt) {
		t.Errorf("after detaching b the file records %+v", f.Agents)
	}
}

// TestRestoreRefusesOtherNamespaces: a record whose path or PID names
// another namespace than the one attached (another inode, or the same inode
// with another cookie: a namespace made after the recorded one was freed),
// or whose namespace still has a live gateway's TUN, is not attached.
func TestRestoreRefusesOtherNamespaces(t *testing.T) {
	requireAttach(t)
	ctx := context.Background()
	dir := t.TempDir()
	pidA, pidB, pidLive := otherNetnsPID(t), otherNetnsPID(t), otherNetnsPID(t)
	g1, _, close1 := stateGateway(t, dir)
	for _, req := range []control.AttachRequest{{Name: "a", PID: pidA}, {Name: "b", PID: pidB}} {
		if _, err := g1.Attach(ctx, req); err != nil {
			t.Fatal(err)
		}
	}
	close1()
	f := readRecords(t, dir)
	f.Agents[0].Target.Cookie++
	f.Agents[1].Target.Netns = "net:[4:1]"
	writeState(t, dir, *f)

	// A gateway that is still running (its state elsewhere) holds the
	// namespace of "live".
	gLive, _, _ := stateGateway(t, t.TempDir())
	if _, err := gLive.Attach(ctx, control.AttachRequest{Name: "live", PID: pidLive}); err != nil {
		t.Fatal(err)
	}
	dir2 := t.TempDir()
	writeState(t, dir2, stateFile{Version: stateVersion, BootID: bootID(), Agents: readRecords(t, gLive.state.dir).Agents})

	g2, log, _ := stateGateway(t, dir)
	if attached, dropped := g2.Restore(ctx); attached != 0 || dropped != 2 {
		t.Errorf("Restore = %d, %d; want 0 attached, 2 dropped", attached, dropped)
	}
	for name, why := range map[string]string{"a": "the inode of a deleted one", "b": "names another namespace now"} {
		if len(log.lines(`"agent":"`+name+`"`, "not attached again", why)) != 1 {
			t.Errorf("%s: no log line saying %q:\n%s", name, why, strings.Join(log.lines(), "\n"))
		}
	}
	for _, pid := range []int{pidA, pidB} {
		if links := linksOfPID(t, pid); !slices.Equal(links, []string{"lo"}) {
			t.Errorf("a refused record was attached: namespace of %d has %v", pid, links)
		}
	}

	g3, log, _ := stateGateway(t, dir2)
	if attached, dropped := g3.Restore(ctx); attached != 0 || dropped != 1 {
		t.Errorf("Restore beside the live gateway = %d, %d; want 0, 1", attached, dropped)
	}
	if len(log.lines(`"agent":"live"`, "not attached again", "clawnet0")) != 1 {
		t.Errorf("no log line naming the live gateway's TUN:\n%s", strings.Join(log.lines(), "\n"))
	}
	if as := gLive.Agents(); len(as) != 1 || !slices.Contains(linksOfPID(t, pidLive), "clawnet0") {
		t.Errorf("the live gateway's agent was disturbed: %+v", as)
	}
}
