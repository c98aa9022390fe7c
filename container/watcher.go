package container

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Labels clawnet puts on the containers `clawnet run` creates.
const (
	// LabelRole is "holder" on a namespace holder and "agent" on the agent
	// container that joins it.
	LabelRole = "io.clawnet.role"
	// LabelAgent is the agent's name, on both containers.
	LabelAgent = "io.clawnet.agent"
	// LabelHolder is the holder's container ID, on the agent container: its
	// removal removes the holder.
	LabelHolder = "io.clawnet.holder"
	// LabelPolicy is the agent's policy, on the holder: a clawnetd that
	// starts (again) while holders run attaches them as they were.
	LabelPolicy = "io.clawnet.policy"
	// LabelAgentConfig, on any container, names its agent's configuration
	// files on the host (absolute paths, comma-separated: openclaw.json,
	// a .mcp.json, ...). A container attached with no policy runs under the
	// policy generated from them, as `clawnet policy generate` writes it,
	// named after its agent (WatcherConfig.ConfigPolicy).
	LabelAgentConfig = "io.clawnet.agent-config"
)

// Log field names.
const (
	logContainer = "container"
	logAgent     = "agent"
	logPid       = "pid"
	logPublish   = "publish"
	logErr       = "error"
)

// Attachment is one container attached as an agent.
type Attachment struct {
	ContainerID   string
	ContainerName string
	Agent         string // agent name, the container's name unless given
	Policy        string // empty: the daemon's default policy
	// Publish are the ports published on the host for the agent
	// ([HOST_IP:]HOST_PORT:AGENT_PORT[/tcp|udp], as `clawnet attach
	// --publish` takes them). The Watcher opens them after every attach of
	// the container, so that they survive its restarts; for a `clawnet run`
	// holder, only while the agent container in its namespace runs.
	Publish []string
	// Pid is the container's init process on the host; its /proc/PID/ns/net
	// is the namespace to attach. It changes on every restart.
	Pid int
}

// Attacher is what the Watcher needs from the daemon. AttachContainer gives
// the namespace of a.Pid a TUN and starts its agent (it does not publish
// a.Publish: the Watcher does, through PublishPorts); DetachContainer
// removes the agent of that container, its flows and its published ports (a
// container that is not attached is not an error). PublishPorts opens the
// agent's listeners for specs, all of them or none; UnpublishPorts closes
// them (one that is not open is not an error). None may call back into the
// Watcher.
type Attacher interface {
	AttachContainer(ctx context.Context, a Attachment) error
	DetachContainer(ctx context.Context, containerID string) error
	PublishPorts(ctx context.Context, agent string, specs []string) error
	UnpublishPorts(ctx context.Context, agent string, specs []string) error
}

// WatcherConfig configures a Watcher. Client and Attacher are required.
type WatcherConfig struct {
	Client   *Client
	Attacher Attacher
	Logger   hclog.Logger // nil: no logs
	// GatewayDNS is written into a container's resolv.conf when its own
	// nameservers cannot reach the gateway. Zero: DefaultGatewayDNS.
	GatewayDNS netip.Addr
	// MinBackoff and MaxBackoff bound the wait between reconnections to an
	// engine that went away. Zero: 250ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// HolderGrace is how old a `clawnet run` holder whose agent container
	// does not exist must be before it is reaped (the agent container is
	// created after its holder, and `docker run` may first pull an image).
	// Zero: 5 minutes.
	HolderGrace time.Duration
	// ConfigPolicy makes the policy of a container attached with no policy
	// whose LabelAgentConfig names files (absolute paths on the host), for
	// its agent, and returns the policy's name. Nil: such a container is
	// refused, with why.
	ConfigPolicy func(ctx context.Context, agent string, files []string) (string, error)
}

// Watcher attaches containers and follows the engine's events so that
// their agents live exactly as long as the containers run: a container that
// stops is detached; one that starts again (a new PID, a new namespace) is
// attached again under the same name and policy; one that is removed, or
// gains another network, is detached and forgotten. It also removes the
// holder of a `clawnet run` agent when that agent's container is removed.
type Watcher struct {
	cfg WatcherConfig
	log hclog.Logger

	// opMu serializes every operation that calls the engine and the
	// Attacher, so that one container's attach and detach never interleave.
	opMu sync.Mutex

	mu sync.Mutex
	// tracked maps container ID to its state; guarded by mu, which is never
	// held across a call to the engine or the Attacher.
	tracked   map[string]*tracked
	connected bool // an event stream is open; guarded by mu
}

type tracked struct {
	a         Attachment
	attached  bool   // the daemon has an agent for it now
	startedAt string // State.StartedAt of the attached run
	// wantPorts: a.Publish should be open while the agent is attached.
	// Always for a plain container; for a `clawnet run` holder, while the
	// agent container in its namespace runs (or does not exist yet).
	wantPorts bool
	published bool // a.Publish is open now
}

// NewWatcher returns a Watcher. It does nothing until Attach or Run.
func NewWatcher(cfg WatcherConfig) *Watcher {
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if !cfg.GatewayDNS.IsValid() {
		cfg.GatewayDNS = DefaultGatewayDNS
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 250 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.HolderGrace <= 0 {
		cfg.HolderGrace = 5 * time.Minute
	}
	return &Watcher{
		cfg:     cfg,
		log:     cfg.Logger.Named("container"),
		tracked: make(map[string]*tracked),
	}
}

// Attach attaches the running container nameOrID as agent (its name when
// empty) under policy, points its resolv.conf at the gateway if needed,
// publishes the ports publish names, and follows it from then on: the ports
// are published again whenever the container is attached again. It refuses
// a container that is not running or has any other network, with a
// one-line error saying what to do, and fails (attaching nothing) when a
// port cannot be published. A `clawnet run` holder whose agent container
// exists but does not run is attached without its ports; they open when
// that container starts.
func (w *Watcher) Attach(ctx context.Context, nameOrID, agent, policy string, publish []string) (Attachment, error) {
	w.opMu.Lock()
	defer w.opMu.Unlock()
	return w.follow(ctx, nameOrID, agent, policy, publish, nil)
}

// follow is Attach, called with opMu held. agentRuns is nil for a user's
// request. syncHolders passes whether the agent container of the holder it
// adopts runs; a port that cannot be opened then does not fail the attach
// (the agent would be left with no network at all): it is logged and
// tried again at the next event of that container.
func (w *Watcher) follow(ctx context.Context, nameOrID, agent, policy string, publish []string, agentRuns *bool) (Attachment, error) {
	info, err := w.cfg.Client.Inspect(ctx, nameOrID)
	if err != nil {
		return Attachment{}, err
	}
	if err := CheckAttachable(info); err != nil {
		return Attachment{}, err
	}
	w.mu.Lock()
	prev := w.tracked[info.ID]
	w.mu.Unlock()
	if prev != nil {
		return Attachment{}, fmt.Errorf("container %q is already attached as agent %q", info.Name, prev.a.Agent)
	}
	if agent == "" {
		agent = info.Name
	}
	if policy == "" {
		if policy, err = w.configPolicy(ctx, info, agent); err != nil {
			return Attachment{}, err
		}
	}
	a := Attachment{ContainerID: info.ID, ContainerName: info.Name, Agent: agent, Policy: policy,
		Publish: append([]string(nil), publish...), Pid: info.Pid}
	want := true
	switch {
	case agentRuns != nil:
		want = *agentRuns
	case len(publish) > 0 && info.Labels[LabelRole] == "holder":
		want = w.holderAgentWantsPorts(ctx, info.ID)
	}
	if err := w.attach(ctx, a, info); err != nil {
		return Attachment{}, err
	}
	t := &tracked{a: a, attached: true, startedAt: info.StartedAt, wantPorts: want}
	if want && len(a.Publish) > 0 {
		err := w.cfg.Attacher.PublishPorts(ctx, a.Agent, a.Publish)
		switch {
		case err == nil:
			t.published = true
		case agentRuns == nil:
			if derr := w.cfg.Attacher.DetachContainer(ctx, a.ContainerID); derr != nil {
				w.log.Error("detach after publish failure", logContainer, a.ContainerName, logErr, derr)
			}
			return Attachment{}, fmt.Errorf("container %q: %w", a.ContainerName, err)
		default:
			w.log.Error("ports not published; tried again at the container's next event", logContainer, a.ContainerName,
				logAgent, a.Agent, logPublish, a.Publish, logErr, err)
		}
	}
	w.mu.Lock()
	w.tracked[info.ID] = t
	w.mu.Unlock()
	if t.published {
		w.log.Info("ports published", logContainer, a.ContainerName, logAgent, a.Agent, logPublish, a.Publish)
	}
	return a, nil
}

// configPolicy is the policy generated from the files the container's
// LabelAgentConfig names, or "" when it has none.
func (w *Watcher) configPolicy(ctx context.Context, info Info, agent string) (string, error) {
	label, ok := info.Labels[LabelAgentConfig]
	if !ok {
		return "", nil
	}
	files, err := AgentConfigFiles(label)
	if err != nil {
		return "", fmt.Errorf("container %q: label %s: %w", info.Name, LabelAgentConfig, err)
	}
	if w.cfg.ConfigPolicy == nil {
		return "", fmt.Errorf("container %q: label %s: this clawnetd does not generate policies; attach it with --policy", info.Name, LabelAgentConfig)
	}
	pol, err := w.cfg.ConfigPolicy(ctx, agent, files)
	if err != nil {
		return "", fmt.Errorf("container %q: label %s: %w", info.Name, LabelAgentConfig, err)
	}
	w.log.Info("policy generated from the agent's configuration", logContainer, info.Name, logAgent, agent, "policy", pol, "files", files)
	return pol, nil
}

// AgentConfigFiles reads the value of LabelAgentConfig: one or more
// absolute paths, comma-separated.
func AgentConfigFiles(label string) ([]string, error) {
	var files []string
	for _, f := range strings.Split(label, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !filepath.IsAbs(f) {
			return nil, fmt.Errorf("%q is not an absolute path on the host", f)
		}
		files = append(files, filepath.Clean(f))
	}
	if len(files) == 0 {
		return nil, errors.New("names no file (want absolute paths on the host, comma-separated)")
	}
	return files, nil
}

// holderAgentWantsPorts says whether a holder's ports should be open: when
// the agent container in its namespace runs, or does not exist yet (`clawnet
// run` attaches the holder first, and claims the ports then, so that a port
// that is taken fails the run before the agent starts).
func (w *Watcher) holderAgentWantsPorts(ctx context.Context, holderID string) bool {
	exists, runs, err := w.holderAgent(ctx, holderID)
	if err != nil {
		w.log.Warn("list the holder's agent container; publishing its ports", logContainer, shortID(holderID), logErr, err)
		return true
	}
	return !exists || runs
}

// holderAgent says whether the agent container of holder holderID exists
// and whether it runs (a paused one counts: its server keeps its state).
func (w *Watcher) holderAgent(ctx context.Context, holderID string) (exists, runs bool, err error) {
	cs, err := w.cfg.Client.ListContainers(ctx, LabelHolder, holderID)
	if err != nil {
		return false, false, err
	}
	for _, c := range cs {
		exists = true
		runs = runs || stateRuns(c.State)
	}
	return exists, runs, nil
}

func stateRuns(state string) bool { return state == "running" || state == "paused" }

// attach asks the daemon to attach a and fixes the container's DNS. DNS
// trouble (a read-only root without a usable resolv.conf) is logged, not
// fatal: the agent keeps its network, and the gateway answers DNS on every
// address for a program that names a resolver itself.
func (w *Watcher) attach(ctx context.Context, a Attachment, info Info) error {
	if err := w.cfg.Attacher.AttachContainer(ctx, a); err != nil {
		return fmt.Errorf("attach container %q: %w", a.ContainerName, err)
	}
	ch, err := FixResolvConf(info, w.cfg.GatewayDNS)
	switch {
	case err != nil:
		w.log.Warn("name lookups will fail", logContainer, a.ContainerName, logAgent, a.Agent,
			"note", ResolvConfNote(ch, err, w.cfg.GatewayDNS))
	case ch.Changed:
		w.log.Info("resolv.conf pointed at the gateway", logContainer, a.ContainerName,
			"created", ch.Created, "dropped", ch.Dropped, "gateway", w.cfg.GatewayDNS.String())
	}
	w.log.Info("attached", logContainer, a.ContainerName, logAgent, a.Agent, logPid, a.Pid)
	return nil
}

// Forget stops following a container (after the daemon detached its agent
// for another reason, e.g. `clawnet detach`). It does not detach.
func (w *Watcher) Forget(containerID string) {
	w.mu.Lock()
	delete(w.tracked, containerID)
	w.mu.Unlock()
}

// Tracked returns the containers the Watcher follows, attached or waiting
// for a restart, sorted by agent name.
func (w *Watcher) Tracked() []Attachment {
	w.mu.Lock()
	out := make([]Attachment, 0, len(w.tracked))
	for _, t := range w.tracked {
		out = append(out, t.a)
	}
	w.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Agent < out[j].Agent })
	return out
}

// Connected reports whether the Watcher has a live event stream.
func (w *Watcher) Connected() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.connected
}

// Run follows the engine's events until ctx ends. When the engine goes away
// it reconnects with capped, jittered exponential backoff, and after every
// (re)connection it reconciles each followed container with the engine's
// state, since events that happened while disconnected are lost. Attached
// agents stay attached meanwhile: the gateway still enforces their policy.
func (w *Watcher) Run(ctx context.Context) error {
	backoff := w.cfg.MinBackoff
	down := false
	for {
		stream, err := w.cfg.Client.Events(ctx, WatchedActions...)
		if err == nil {
			if down {
				w.log.Info("engine events reconnected")
			}
			down = false
			backoff = w.cfg.MinBackoff
			w.setConnected(true)
			// Subscribed first, then reconciled: nothing falls in between.
			w.resync(ctx)
			err = w.consume(ctx, stream)
			stream.Close()
			w.setConnected(false)
		}
		if ctx.Err() != nil {
			return nil
		}
		if !down {
			// Once per outage, not once per retry.
			w.log.Warn("engine events lost; reconnecting", logErr, err)
			down = true
		}
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(d):
		}
		backoff = min(backoff*2, w.cfg.MaxBackoff)
	}
}

func (w *Watcher) setConnected(v bool) {
	w.mu.Lock()
	w.connected = v
	w.mu.Unlock()
}

func (w *Watcher) consume(ctx context.Context, s *EventStream) error {
	for {
		ev, err := s.Next()
		if err != nil {
			return err
		}
		w.handle(ctx, ev)
	}
}

func (w *Watcher) handle(ctx context.Context, ev Event) {
	if h := ev.Attributes[LabelHolder]; ev.Type == "container" && h != "" && ev.Attributes[LabelRole] == "agent" {
		if removed(ev.Action) {
			w.removeHolder(ctx, h, "its agent container was removed")
		} else {
			w.followAgentContainer(ctx, h)
		}
	}
	w.mu.Lock()
	_, ok := w.tracked[ev.ID]
	w.mu.Unlock()
	if !ok {
		return
	}
	w.opMu.Lock()
	defer w.opMu.Unlock()
	w.reconcile(ctx, ev.ID)
}

// reconcile brings one followed container's agent in line with the engine's
// view of it. Level-triggered on purpose: it does the same whatever event
// (or none, after a reconnection) led here. Called with opMu held.
func (w *Watcher) reconcile(ctx context.Context, id string) {
	w.mu.Lock()
	t := w.tracked[id]
	var cur tracked
	if t != nil {
		cur = *t
	}
	w.mu.Unlock()
	if t == nil {
		return
	}
	lg := w.log.With(logContainer, cur.a.ContainerName, logAgent, cur.a.Agent)
	info, err := w.cfg.Client.Inspect(ctx, id)
	if errors.Is(err, ErrNotFound) {
		w.detach(ctx, lg, cur)
		w.Forget(id)
		lg.Info("container removed; agent gone")
		return
	}
	if err != nil {
		lg.Warn("inspect failed; will retry on the next event or reconnection", logErr, err)
		return
	}
	if cerr := checkNetwork(info.Name, info); cerr != nil {
		w.detach(ctx, lg, cur)
		w.Forget(id)
		lg.Error("container gained another network; detached and no longer followed", logErr, cerr)
		return
	}
	if !info.Running || info.Pid <= 0 {
		if cur.attached {
			w.detach(ctx, lg, cur)
			w.update(id, t, func(t *tracked) { t.attached, t.published = false, false })
			lg.Info("container stopped; agent detached until it starts again")
		}
		return
	}
	if cur.attached && cur.a.Pid == info.Pid && cur.startedAt == info.StartedAt {
		// The same run: only ports that could not be opened are left to do.
		w.syncPorts(ctx, lg, id)
		return
	}
	// A new run of the container: new PID, new namespace.
	if cur.attached {
		w.detach(ctx, lg, cur)
		w.update(id, t, func(t *tracked) { t.attached, t.published = false, false })
	}
	a := cur.a
	a.Pid = info.Pid
	a.ContainerName = info.Name
	if err := w.attach(ctx, a, info); err != nil {
		lg.Error("re-attach after restart failed; the container has no network", logErr, err)
		return
	}
	if !w.update(id, t, func(t *tracked) { t.a, t.attached, t.startedAt = a, true, info.StartedAt }) {
		// Forgotten while attaching: do not leave an agent nobody follows.
		w.detach(ctx, lg, tracked{a: a, attached: true})
		return
	}
	lg.Info("container restarted; attached again", logPid, a.Pid)
	w.syncPorts(ctx, lg, id)
}

// followAgentContainer opens the ports of holder holderID while the agent
// container in its namespace runs and closes them while it does not, so
// that a stopped `clawnet run` agent leaves no listener behind and a
// started one is reachable again. Level-triggered, like reconcile: the
// engine is asked what runs, whatever the event.
func (w *Watcher) followAgentContainer(ctx context.Context, holderID string) {
	w.mu.Lock()
	t := w.tracked[holderID]
	w.mu.Unlock()
	if t == nil {
		return
	}
	w.opMu.Lock()
	defer w.opMu.Unlock()
	_, runs, err := w.holderAgent(ctx, holderID)
	if err != nil {
		w.log.Warn("list the holder's agent container; will retry on the next event or reconnection",
			logContainer, shortID(holderID), logErr, err)
		return
	}
	w.setWantPorts(ctx, holderID, runs)
}

// setWantPorts records whether the ports of followed container id should
// be open, and opens or closes them. Called with opMu held.
func (w *Watcher) setWantPorts(ctx context.Context, id string, want bool) {
	w.mu.Lock()
	if t := w.tracked[id]; t != nil {
		t.wantPorts = want
	}
	w.mu.Unlock()
	w.syncPorts(ctx, nil, id)
}

// syncPorts opens or closes the published ports of followed container id
// as its record wants them. Called with opMu held.
func (w *Watcher) syncPorts(ctx context.Context, lg hclog.Logger, id string) {
	w.mu.Lock()
	t := w.tracked[id]
	var cur tracked
	if t != nil {
		cur = *t
	}
	w.mu.Unlock()
	if t == nil || !cur.attached || len(cur.a.Publish) == 0 || cur.wantPorts == cur.published {
		return
	}
	if lg == nil {
		lg = w.log.With(logContainer, cur.a.ContainerName, logAgent, cur.a.Agent)
	}
	if cur.wantPorts {
		if err := w.cfg.Attacher.PublishPorts(ctx, cur.a.Agent, cur.a.Publish); err != nil {
			lg.Error("ports not published; tried again at the container's next event", logPublish, cur.a.Publish, logErr, err)
			return
		}
		if !w.update(id, t, func(t *tracked) { t.published = true }) {
			return
		}
		lg.Info("ports published", logPublish, cur.a.Publish)
		return
	}
	if err := w.cfg.Attacher.UnpublishPorts(ctx, cur.a.Agent, cur.a.Publish); err != nil {
		lg.Error("unpublish", logPublish, cur.a.Publish, logErr, err)
	}
	w.update(id, t, func(t *tracked) { t.published = false })
	lg.Info("agent container not running; ports closed until it starts again", logPublish, cur.a.Publish)
}

// update applies f to t if t is still the followed state of id.
func (w *Watcher) update(id string, t *tracked, f func(*tracked)) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.tracked[id] != t {
		return false
	}
	f(t)
	return true
}

func (w *Watcher) detach(ctx context.Context, lg hclog.Logger, t tracked) {
	if !t.attached {
		return
	}
	if err := w.cfg.Attacher.DetachContainer(ctx, t.a.ContainerID); err != nil {
		lg.Error("detach failed", logErr, err)
	}
}

// resync reconciles every followed container, reaps orphaned holders and
// adopts running ones. Called after each (re)connection.
func (w *Watcher) resync(ctx context.Context) {
	w.mu.Lock()
	ids := make([]string, 0, len(w.tracked))
	for id := range w.tracked {
		ids = append(ids, id)
	}
	w.mu.Unlock()
	for _, id := range ids {
		w.opMu.Lock()
		w.reconcile(ctx, id)
		w.opMu.Unlock()
	}
	w.syncHolders(ctx)
}

// syncHolders removes `clawnet run` holders whose agent container is gone
// (removed while clawnetd was not following events), and attaches running
// holders whose agent container exists but that nobody follows: their
// agents lost the gateway when a previous clawnetd stopped, and have had no
// network since. They get the name, policy and ports recorded on the
// holder; the ports open only if the agent container runs. The ports of
// followed holders are brought in line with their agent containers too,
// since their events may have been missed.
func (w *Watcher) syncHolders(ctx context.Context) {
	holders, err := w.cfg.Client.ListContainers(ctx, LabelRole, "holder")
	if err != nil {
		w.log.Warn("list holders", logErr, err)
		return
	}
	if len(holders) == 0 {
		return
	}
	agents, err := w.cfg.Client.ListContainers(ctx, LabelRole, "agent")
	if err != nil {
		w.log.Warn("list agent containers", logErr, err)
		return
	}
	used := make(map[string]bool, len(agents))
	runs := make(map[string]bool, len(agents))
	for _, a := range agents {
		h := a.Labels[LabelHolder]
		used[h] = true
		runs[h] = runs[h] || stateRuns(a.State)
	}
	now := time.Now()
	for _, h := range holders {
		switch {
		case used[h.ID] && h.State == "running":
			w.opMu.Lock()
			w.mu.Lock()
			_, followed := w.tracked[h.ID]
			w.mu.Unlock()
			if followed {
				w.setWantPorts(ctx, h.ID, runs[h.ID])
				w.opMu.Unlock()
				continue
			}
			agent := h.Labels[LabelAgent]
			agentRuns := runs[h.ID]
			_, err := w.follow(ctx, h.ID, agent, h.Labels[LabelPolicy], splitPublish(h.Labels[LabelPublish]), &agentRuns)
			w.opMu.Unlock()
			if err != nil {
				w.log.Error("attach running holder", logContainer, shortID(h.ID), logAgent, agent, logErr, err)
				continue
			}
			w.log.Info("running holder attached again", logContainer, shortID(h.ID), logAgent, agent)
		case !used[h.ID] && now.Sub(time.Unix(h.Created, 0)) >= w.cfg.HolderGrace:
			w.removeHolder(ctx, h.ID, "its agent container no longer exists")
		}
	}
}

// splitPublish reads LabelPublish.
func splitPublish(label string) []string {
	if label == "" {
		return nil
	}
	return strings.Split(label, ",")
}

func (w *Watcher) removeHolder(ctx context.Context, id, why string) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// Removing it emits its own die/destroy events, which detach its agent.
	if err := w.cfg.Client.RemoveContainer(ctx, id, true); err != nil {
		w.log.Error("remove holder", logContainer, shortID(id), logErr, err)
		return
	}
	removeHolderFiles(id)
	w.log.Info("holder removed", logContainer, shortID(id), "reason", why)
}
