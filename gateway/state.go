package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawnet/clawnet/policy"
	"github.com/clawnet/clawnet/tun"
)

// What is attached survives a restart of clawnetd (DESIGN.md invariant 9).
//
// The gateway keeps one record per agent attached by --netns or --pid in
// state.json under the state directory: its name, policy and target (the
// path or PID, and the identity of the namespace it named), the index of
// its addresses in the pool, its published ports, whether the attach was
// forced, and since when it is attached. The file is written whole and
// atomically (a temporary file, fsync, rename, fsync of the directory) on
// every attach and detach, with every agent's published ports as they are
// then, and by stateChanged, for the publish routes to call when only
// published ports change; a crash at any point leaves the old file or the
// new one. Gateway.Close (a stop) forgets nothing: only a detach does.
//
// At start, before the control API serves, Restore attaches every recorded
// target again with its name, policy, addresses, published ports and
// since-time. The old TUNs vanished with the old process, so the namespace
// has only lo again, and nobody needs to run clawnet. A record is dropped,
// with one line in the daemon log, when its target is gone, when the path
// or PID now names another namespace (the nsfs device and inode, and the
// kernel's netns cookie, which it never reuses while it runs, where an
// inode may be), when its policy no longer exists (refused, never widened
// to another), or when the attach itself is refused (another interface
// appeared, or another gateway's TUN is still there). A file from an
// earlier boot names no namespace that still exists.
//
// Container agents are not recorded: the engine is their record. The
// Watcher attaches the `clawnet run` holders it finds running again at
// start, as before (with new addresses and a new since-time). Only their
// phase is, by container ID: run, or setup with the end of its timeout, so
// that attaching a container again (after the engine restarted it, or
// clawnetd itself restarted) never opens a setup phase it left, nor one
// whose timeout passed, and re-arms a timeout still running. The
// container's agent cannot reopen setup by making it restart. A user's
// detach forgets it; the most recent maxContainerPhases are kept.
//
// An agent's record keeps its phase too (phase.go), and when a setup
// timeout will end it; a record without one is in run.
//
// A lock file keeps two clawnetd from sharing a state directory. A file this
// clawnetd cannot read (not JSON, no or another version, a bad record) stops
// it at start with an error that names it, and is left as it is.

// stateVersion is the version of state.json this clawnetd reads and writes.
const stateVersion = 1

const (
	stateFileName = "state.json"
	stateLockName = "clawnetd.lock"
	// stateTempPrefix starts the name of a state file being written; one
	// left by a crash is removed at the next start.
	stateTempPrefix = "." + stateFileName + ".tmp-"
)

// Target kinds in a record.
const (
	targetNetns = "netns"
	targetPID   = "pid"
)

// stateFile is state.json.
type stateFile struct {
	Version int `json:"version"`
	// BootID is the kernel's boot ID when the file was written: no
	// namespace outlives a boot.
	BootID string        `json:"boot_id,omitempty"`
	Agents []agentRecord `json:"agents"`
	// Containers are the phases of container agents, oldest first.
	Containers []containerRecord `json:"containers,omitempty"`
}

// containerRecord is the phase of a container's agent, by container ID.
type containerRecord struct {
	ID         string     `json:"id"`
	Phase      string     `json:"phase"`
	SetupUntil *time.Time `json:"setup_until,omitempty"`
	// Since is when it was recorded, to keep the most recent.
	Since time.Time `json:"since"`
}

// maxContainerPhases bounds the container phases kept: a container the
// engine removed leaves its record behind.
const maxContainerPhases = 4096

// agentRecord is one attached agent, as Restore needs it.
type agentRecord struct {
	Name   string       `json:"name"`
	Policy string       `json:"policy"`
	Target targetRecord `json:"target"`
	// AddrIndex is the agent's index in the address pool: the same index
	// is the same addresses.
	AddrIndex int      `json:"addr_index"`
	Addresses []string `json:"addresses,omitempty"`
	Published []string `json:"published,omitempty"`
	// Force is attach --force: the namespace had other interfaces.
	Force bool `json:"force,omitempty"`
	// Interface is the TUN's name when the attach named one.
	Interface  string    `json:"interface,omitempty"`
	AttachedAt time.Time `json:"attached_at"`
	// Phase is the agent's phase, setup or run ("": run). SetupUntil is
	// when a setup timeout ends the setup phase.
	Phase      string     `json:"phase,omitempty"`
	SetupUntil *time.Time `json:"setup_until,omitempty"`
}

// targetRecord is what an agent was attached by, and which namespace that
// was.
type targetRecord struct {
	Kind string `json:"kind"` // targetNetns or targetPID
	Path string `json:"path,omitempty"`
	PID  int    `json:"pid,omitempty"`
	// Netns is tun.Netns.ID: the device and inode of the namespace.
	Netns string `json:"netns"`
	// Cookie is the namespace's SO_NETNS_COOKIE (0: unknown). The kernel
	// may give a freed namespace's inode to a new one, never its cookie.
	Cookie uint64 `json:"cookie,omitempty"`
}

// desc is the target as Agent.target and the logs write it.
func (t targetRecord) desc() string {
	if t.Kind == targetPID {
		return "pid:" + strconv.Itoa(t.PID)
	}
	return "netns:" + t.Path
}

// stateStore is the state directory of a running gateway.
type stateStore struct {
	dir, path string
	lock      *os.File
	bootID    string

	mu sync.Mutex
	// records are the recorded agents by name: those attached now and,
	// until Restore, those recorded by the last clawnetd. Guarded by mu.
	records map[string]agentRecord
	// stale are the records of a file written in an earlier boot, for
	// Restore to report. Guarded by mu.
	stale []agentRecord
	// containers are the phases of container agents. Guarded by mu.
	containers map[string]containerRecord
	closed     bool // guarded by mu
}

// openState locks dir (made if needed) and reads its state file. An empty
// dir keeps no state: it returns nil.
func openState(dir string) (*stateStore, error) {
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	lock, err := lockStateDir(dir)
	if err != nil {
		return nil, err
	}
	st := &stateStore{dir: dir, path: filepath.Join(dir, stateFileName), lock: lock, bootID: bootID(),
		records: map[string]agentRecord{}, containers: map[string]containerRecord{}}
	f, err := readStateFile(st.path)
	if err != nil {
		lock.Close()
		return nil, err
	}
	for _, r := range f.Agents {
		if f.BootID != "" && st.bootID != "" && f.BootID != st.bootID {
			st.stale = append(st.stale, r)
			continue
		}
		st.records[r.Name] = r
	}
	if f.BootID == "" || st.bootID == "" || f.BootID == st.bootID {
		for _, c := range f.Containers {
			st.containers[c.ID] = c
		}
	}
	// Temporary files left by a crash while writing: the lock says no
	// other clawnetd writes here.
	if temps, err := filepath.Glob(filepath.Join(dir, stateTempPrefix+"*")); err == nil {
		for _, t := range temps {
			os.Remove(t)
		}
	}
	return st, nil
}

// lockStateDir takes the state directory's lock for as long as the process
// runs (or until close).
func lockStateDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, stateLockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state_dir lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := io.ReadAll(io.LimitReader(f, 32))
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("state_dir %s is in use by another clawnetd (pid %s): give each clawnetd a state_dir of its own", dir, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("state_dir lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// bootID is the kernel's boot ID, or "" if it cannot be read.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// readStateFile reads and checks a state file; a missing one is empty.
// Its errors say that the file is left as it is.
func readStateFile(path string) (*stateFile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &stateFile{Version: stateVersion}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("state file: %w", err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("state file %s: %s; it is left as it is: fix it, or move it away to start without the attachments it records", path, fmt.Sprintf(format, args...))
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, bad("empty")
	}
	var probe struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, bad("not a JSON object with a version: %v", err)
	}
	switch {
	case probe.Version == nil:
		return nil, bad("no version")
	case *probe.Version != stateVersion:
		return nil, bad("version %d, and this clawnetd reads version %d only", *probe.Version, stateVersion)
	}
	var f stateFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, bad("%v", err)
	}
	names, namespaces := map[string]bool{}, map[string]bool{}
	for i, r := range f.Agents {
		if err := r.check(); err != nil {
			return nil, bad("agent %d (%q): %v", i+1, r.Name, err)
		}
		if names[r.Name] || namespaces[r.Target.Netns] {
			return nil, bad("agent %d (%q): a second record of the same name or namespace", i+1, r.Name)
		}
		names[r.Name], namespaces[r.Target.Netns] = true, true
	}
	return &f, nil
}

// check refuses a record Restore could not act on.
func (r agentRecord) check() error {
	switch {
	case !validName.MatchString(r.Name):
		return errors.New("bad name")
	case r.Policy == "":
		return errors.New("no policy")
	case r.AddrIndex < 2:
		return fmt.Errorf("bad addr_index %d", r.AddrIndex)
	case r.Target.Netns == "":
		return errors.New("no namespace identity")
	case r.Target.Kind == targetNetns && !filepath.IsAbs(r.Target.Path):
		return fmt.Errorf("netns target with path %q, not an absolute path", r.Target.Path)
	case r.Target.Kind == targetPID && r.Target.PID <= 0:
		return fmt.Errorf("pid target with pid %d", r.Target.PID)
	case r.Target.Kind != targetNetns && r.Target.Kind != targetPID:
		return fmt.Errorf("unknown target kind %q", r.Target.Kind)
	}
	return nil
}

// change applies fn to the records under the store's lock and writes the
// file if fn reports a change. Writes are serialized: the file always
// holds the records as the last change left them.
func (st *stateStore) change(fn func(records map[string]agentRecord) bool) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed || !fn(st.records) {
		return nil
	}
	f := stateFile{Version: stateVersion, BootID: st.bootID, Agents: make([]agentRecord, 0, len(st.records))}
	for _, r := range st.records {
		f.Agents = append(f.Agents, r)
	}
	sort.Slice(f.Agents, func(i, j int) bool { return f.Agents[i].Name < f.Agents[j].Name })
	for _, c := range st.containers {
		f.Containers = append(f.Containers, c)
	}
	sort.Slice(f.Containers, func(i, j int) bool {
		a, b := f.Containers[i], f.Containers[j]
		return a.Since.Before(b.Since) || a.Since.Equal(b.Since) && a.ID < b.ID
	})
	if n := len(f.Containers) - maxContainerPhases; n > 0 {
		for _, c := range f.Containers[:n] {
			delete(st.containers, c.ID)
		}
		f.Containers = f.Containers[n:]
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(st.path, append(data, '\n'))
}

// close releases the state directory. Nothing is written after it.
func (st *stateStore) close() {
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.closed {
		st.closed = true
		st.lock.Close()
	}
}

// syncFile is (*os.File).Sync; tests make it fail.
var syncFile = (*os.File).Sync

// writeFileAtomic replaces path with data: a reader, or a start after a
// crash, sees the old content or the new one, never a mix. On error path
// is untouched and no temporary file is left.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, stateTempPrefix+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = syncFile(f)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return syncFile(d)
}

// netnsCookie reads the namespace's SO_NETNS_COOKIE from a socket made in
// it.
func netnsCookie(ns *tun.Netns) (uint64, error) {
	var cookie uint64
	err := ns.Do(func() error {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		cookie, err = unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("netns cookie of %s: %w", ns.Path(), err)
	}
	return cookie, nil
}

// aim makes idx the index get hands out next, so that an agent attached
// again gets its addresses back. It fails when idx is outside the pool or
// taken. Restore relies on nothing else taking an index between aim and
// the get of its attach: it runs before anything else attaches.
func (p *addrPool) aim(idx int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case idx < 2 || idx > p.max:
		return fmt.Errorf("address index %d is outside %s now", idx, p.v4)
	case p.used[idx]:
		return fmt.Errorf("address index %d is taken", idx)
	}
	p.next = idx
	return nil
}

// recordAttach records agent a, just attached (with --force or not), in
// the state file. Of a container agent, only the phase: the engine keeps
// the rest.
func (g *Gateway) recordAttach(a *Agent, force bool) {
	if g.state == nil {
		return
	}
	if a.containerID != "" {
		g.recordPhase(a) // the engine keeps the rest
		return
	}
	t := targetRecord{Kind: targetNetns, Path: a.ns.Path(), Netns: a.ns.ID()}
	if a.pid != 0 {
		t = targetRecord{Kind: targetPID, PID: a.pid, Netns: a.ns.ID()}
	} else if abs, err := filepath.Abs(t.Path); err == nil {
		t.Path = abs
	}
	if c, err := netnsCookie(a.ns); err == nil {
		t.Cookie = c
	} else {
		g.log.Warn("agent recorded by its namespace's inode only", "agent", a.name, "error", err)
	}
	r := agentRecord{Name: a.name, Policy: a.policy, Target: t, AddrIndex: a.addrIdx,
		Addresses: a.info().Addresses, Force: force, AttachedAt: a.attachedAt}
	r.Phase, r.SetupUntil = a.phaseRecord()
	if a.dev != nil && a.dev.IfName != g.cfg.Network.Interface {
		r.Interface = a.dev.IfName
	}
	g.saveState(func(m map[string]agentRecord) bool {
		if g.agent(a.name) != a {
			return false // detached meanwhile
		}
		m[a.name] = r
		return true
	})
}

// forgetAttach drops the record of the agent called name, detached.
func (g *Gateway) forgetAttach(name string) {
	g.saveState(func(m map[string]agentRecord) bool {
		_, ok := m[name]
		delete(m, name)
		return ok
	})
}

// forgetContainer drops the phase of container id: a user detached it, and
// an attach of it from then on is a new one.
func (g *Gateway) forgetContainer(id string) {
	g.saveState(func(map[string]agentRecord) bool {
		_, ok := g.state.containers[id]
		delete(g.state.containers, id)
		return ok
	})
}

// phaseRecord is a's phase as its record keeps it.
func (a *Agent) phaseRecord() (string, *time.Time) {
	if !a.setup.Load() {
		return policy.PhaseRun, nil
	}
	if until := a.setupDeadline(); !until.IsZero() {
		return policy.PhaseSetup, &until
	}
	return policy.PhaseSetup, nil
}

// recordPhase writes a's phase, just changed, to the state file: in its
// record, or for a container agent, in the list of containers in run.
func (g *Gateway) recordPhase(a *Agent) {
	g.saveState(func(m map[string]agentRecord) bool {
		if g.agent(a.name) != a {
			return false // detached meanwhile, or not yet attached
		}
		if a.containerID != "" {
			c := containerRecord{ID: a.containerID, Since: time.Now().UTC()}
			c.Phase, c.SetupUntil = a.phaseRecord()
			g.state.containers[a.containerID] = c
			return true
		}
		r, ok := m[a.name]
		if !ok {
			return false
		}
		r.Phase, r.SetupUntil = a.phaseRecord()
		m[a.name] = r
		return true
	})
}

// containerPhase is the recorded phase of the container id, and the end
// of its setup timeout; "" when none is recorded (a new attach).
func (g *Gateway) containerPhase(id string) (string, time.Time) {
	if g.state == nil || id == "" {
		return "", time.Time{}
	}
	g.state.mu.Lock()
	defer g.state.mu.Unlock()
	c, ok := g.state.containers[id]
	if !ok {
		return "", time.Time{}
	}
	if c.SetupUntil != nil {
		return c.Phase, *c.SetupUntil
	}
	return c.Phase, time.Time{}
}

// stateChanged writes the state file again: an agent's published ports
// changed.
func (g *Gateway) stateChanged() {
	g.saveState(func(map[string]agentRecord) bool { return true })
}

// saveState applies fn to the records and, if it changed them, writes the
// file with every agent's published ports as they are now. A write that
// fails is logged: the attachment stands, but will not survive a restart.
func (g *Gateway) saveState(fn func(map[string]agentRecord) bool) {
	if g.state == nil {
		return
	}
	err := g.state.change(func(m map[string]agentRecord) bool {
		if !fn(m) {
			return false
		}
		for name, r := range m {
			if a := g.agent(name); a != nil {
				r.Published = a.publishedSpecs()
				sort.Strings(r.Published)
				m[name] = r
			}
		}
		return true
	})
	if err != nil {
		g.log.Error("state file not written: attachments changed since its last write will not survive a restart", "path", g.state.path, "error", err)
	}
}

// Restore attaches again every agent the state file records whose target
// is still there and still the same namespace, with its name, policy,
// addresses, published ports and since-time. It logs one line for each
// agent it attaches and for each record it drops, with why, and writes the
// file without the dropped ones. Call it once, after New and before
// anything else can attach (before Serve, before a container Watcher
// runs). It returns how many agents it attached and records it dropped.
func (g *Gateway) Restore(ctx context.Context) (attached, dropped int) {
	st := g.state
	if st == nil {
		return 0, 0
	}
	st.mu.Lock()
	stale := st.stale
	st.stale = nil
	recs := make([]agentRecord, 0, len(st.records))
	for _, r := range st.records {
		recs = append(recs, r)
	}
	st.mu.Unlock()
	if len(recs) == 0 && len(stale) == 0 {
		return 0, 0
	}
	sort.Slice(recs, func(i, j int) bool { return recs[i].Name < recs[j].Name })
	for _, r := range stale {
		g.log.Warn("recorded agent not attached again", "agent", r.Name, "target", r.Target.desc(), "policy", r.Policy,
			"reason", "the state file is from an earlier boot: no namespace outlives one")
		dropped++
	}
	kept := map[string]agentRecord{}
	for _, r := range recs {
		a, err := g.restore(ctx, r)
		if err != nil {
			g.log.Warn("recorded agent not attached again", "agent", r.Name, "target", r.Target.desc(), "policy", r.Policy, "reason", err.Error())
			dropped++
			continue
		}
		info := a.info()
		r.AddrIndex, r.Addresses = a.addrIdx, info.Addresses
		r.Phase, r.SetupUntil = a.phaseRecord()
		kept[r.Name] = r
		attached++
		args := []any{"agent", r.Name, "target", r.Target.desc(), "policy", r.Policy, "addrs", info.Addresses,
			"since", r.AttachedAt.Format(time.RFC3339), "published", info.Published}
		g.log.Info("agent attached again", args...)
	}
	g.saveState(func(m map[string]agentRecord) bool {
		for name := range m {
			if _, ok := kept[name]; !ok {
				delete(m, name)
			}
		}
		for name, r := range kept {
			m[name] = r
		}
		return true
	})
	g.log.Info("attachments restored", "state_file", st.path, "attached_again", attached, "dropped", dropped)
	return attached, dropped
}

// restore attaches one recorded agent again, or says why it cannot.
func (g *Gateway) restore(ctx context.Context, r agentRecord) (*Agent, error) {
	if g.policies.Get(r.Policy) == nil {
		return nil, fmt.Errorf("its policy %q is not defined any more (policies: %v); it is not attached under another", r.Policy, g.policies.Names())
	}
	ns, err := r.Target.open()
	if err != nil {
		return nil, err
	}
	if err := r.Target.same(ns); err != nil {
		ns.Close()
		return nil, err
	}
	if ns.IsHost() {
		ns.Close()
		return nil, fmt.Errorf("%s is the gateway's own network namespace", r.Target.desc())
	}
	t := target{ns: ns, desc: r.Target.desc(), name: r.Name, pid: r.Target.PID}
	if err := g.reserve(t); err != nil {
		ns.Close()
		return nil, err
	}
	aimErr := g.pool.aim(r.AddrIndex)
	phase := r.Phase
	if phase == "" {
		phase = policy.PhaseRun // recorded before phases: it was never in setup
	}
	var until time.Time
	if r.SetupUntil != nil {
		until = *r.SetupUntil
	}
	a, err := g.attach(ctx, attachSpec{name: r.Name, policy: r.Policy, target: t.desc, pid: t.pid, ns: ns, force: r.Force, ifname: r.Interface,
		phase: phase, setupUntil: until})
	if err != nil {
		g.mu.Lock()
		delete(g.agents, r.Name)
		delete(g.byNetns, ns.ID())
		g.mu.Unlock()
		ns.Close()
		return nil, err
	}
	a.attachedAt = r.AttachedAt
	if aimErr != nil || a.addrIdx != r.AddrIndex {
		if aimErr == nil {
			aimErr = errors.New("another attach took them")
		}
		a.notes = append(a.notes, fmt.Sprintf("attached again with other addresses than before the restart (%v): %v", r.Addresses, aimErr))
		g.log.Warn("agent attached again with other addresses", "agent", r.Name, "was", r.Addresses, "reason", aimErr.Error())
	}
	if t.pid != 0 {
		a.notes = append(a.notes, fixProcessDNS(t.pid, g.gw4)...)
	}
	g.mu.Lock()
	g.agents[r.Name] = a
	g.mu.Unlock()
	for _, spec := range r.Published {
		ps, err := parsePublish([]string{spec})
		if err == nil {
			err = g.Publish(r.Name, ps)
		}
		if err != nil {
			g.log.Warn("recorded published port not published again", "agent", r.Name, "publish", spec, "error", err)
		}
	}
	return a, nil
}

// open opens the recorded target's namespace, saying so when it is gone.
func (t targetRecord) open() (*tun.Netns, error) {
	var ns *tun.Netns
	var err error
	if t.Kind == targetPID {
		ns, err = tun.NetnsOfPID(t.PID)
	} else {
		ns, err = tun.OpenNetns(t.Path)
	}
	switch {
	case err == nil:
		return ns, nil
	case errors.Is(err, os.ErrNotExist) && t.Kind == targetPID:
		return nil, fmt.Errorf("process %d is gone", t.PID)
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%s is gone", t.Path)
	case errors.Is(err, tun.ErrNotNetns):
		return nil, fmt.Errorf("%s is not a network namespace any more", t.Path)
	}
	return nil, err
}

// same refuses ns unless it is the namespace the target named when it was
// recorded.
func (t targetRecord) same(ns *tun.Netns) error {
	if id := ns.ID(); id != t.Netns {
		return fmt.Errorf("%s names another namespace now (%s, recorded %s)", t.desc(), id, t.Netns)
	}
	if t.Cookie == 0 {
		return nil
	}
	c, err := netnsCookie(ns)
	if err != nil {
		return fmt.Errorf("cannot tell whether %s is still the recorded namespace: %v", t.desc(), err)
	}
	if c != t.Cookie {
		return fmt.Errorf("%s names another namespace now (the inode of a deleted one, cookie %d, recorded %d)", t.desc(), c, t.Cookie)
	}
	return nil
}
