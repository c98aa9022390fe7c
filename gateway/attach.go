package gateway

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/tun"
)

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$`)

// target is what an attach request names, opened: the namespace to attach
// and what to call it.
type target struct {
	ns          *tun.Netns
	desc        string // container:NAME, pid:N or netns:PATH
	name        string // the agent's name
	containerID string
	pid         int
	notes       []string // the engine side's, for the user
}

// Attach attaches the target of req as an agent.
func (g *Gateway) Attach(ctx context.Context, req control.AttachRequest) (_ *control.Agent, err error) {
	if req.Pod != nil && g.refused != nil {
		defer func() {
			if err != nil {
				g.refused(*req.Pod, err)
			}
		}()
	}
	req, err = g.resolvePodPolicy(ctx, req)
	if err != nil {
		return nil, err
	}
	pol, err := g.checkAttach(req)
	if err != nil {
		return nil, err
	}
	setupTimeout, err := parseSetupTimeout(req.SetupTimeout)
	if err != nil {
		return nil, err
	}
	t, err := g.openTarget(ctx, req)
	if err != nil {
		return nil, err
	}
	phase, until := g.containerPhase(t.containerID)
	if err := g.reserve(t); err != nil {
		t.ns.Close()
		return nil, err
	}
	a, err := g.attach(ctx, attachSpec{
		name: t.name, policy: pol, target: t.desc, containerID: t.containerID, pid: t.pid,
		ns: t.ns, force: req.Force, ifname: req.Interface, setupTimeout: setupTimeout,
		phase: phase, setupUntil: until,
	})
	if err == nil && req.PID != 0 {
		a.notes = append(a.notes, fixProcessDNS(req.PID, g.gw4)...)
	}
	if err == nil {
		a.notes = append(a.notes, t.notes...)
	}
	g.mu.Lock()
	if err != nil {
		delete(g.agents, t.name)
		delete(g.byNetns, t.ns.ID())
		g.mu.Unlock()
		t.ns.Close()
		return nil, err
	}
	g.agents[t.name] = a
	g.mu.Unlock()
	g.log.Info("agent attached", "agent", t.name, "target", t.desc, "policy", pol, "addrs", a.info().Addresses)
	if err := g.publishAtAttach(t.name, req.Publish); err != nil {
		return nil, err
	}
	g.recordAttach(a, req.Force)
	return a.info(), nil
}

// publishAtAttach publishes the ports an attach request names; if one
// cannot be, the agent is detached again and the attach fails with why.
func (g *Gateway) publishAtAttach(name string, specs []string) error {
	ps, err := parsePublish(specs)
	if err == nil {
		err = g.Publish(name, ps)
	}
	if err != nil {
		_ = g.Detach(name)
		return err
	}
	return nil
}

// AttachRequest attaches what a control API request names. A container is
// attached through the Follower when there is one, so that it is followed
// through stops and restarts; anything else directly, as Attach does.
func (g *Gateway) AttachRequest(ctx context.Context, req control.AttachRequest) (*control.Agent, error) {
	if req.Container == "" || g.follower == nil {
		return g.Attach(ctx, req)
	}
	if _, err := g.checkAttach(req); err != nil {
		return nil, err
	}
	setupTimeout, err := parseSetupTimeout(req.SetupTimeout)
	if err != nil {
		return nil, err
	}
	// The follower publishes the ports, and again at every re-attach.
	name, err := g.follower.Follow(ctx, req.Container, req.Name, req.Policy, req.Publish)
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	a := g.agents[name]
	g.mu.Unlock()
	if a == nil {
		return nil, fmt.Errorf("%w: container %s was attached as agent %q, which is gone", ErrNotFound, req.Container, name)
	}
	if setupTimeout > 0 {
		a.armSetupTimer(time.Now().Add(setupTimeout))
	}
	return a.info(), nil
}

// resolvePodPolicy fills in the policy of a pod that req names without one,
// from Options.PodPolicy.
//
// A namespaced policy (NAMESPACE/NAME, from the Kubernetes API server) is
// for its namespace's pods only: a pod whose request names another
// namespace's, however it came to (a runtime passing the pod's annotation
// verbatim), is refused.
func (g *Gateway) resolvePodPolicy(ctx context.Context, req control.AttachRequest) (control.AttachRequest, error) {
	if req.Pod != nil && strings.Contains(req.Policy, "/") && !strings.HasPrefix(req.Policy, req.Pod.Namespace+"/") {
		return req, fmt.Errorf("%w: pod %s/%s may run only under a policy of its own namespace, not %q", ErrBadRequest, req.Pod.Namespace, req.Pod.Name, req.Policy)
	}
	if req.Pod == nil || g.podPolicy == nil {
		return req, nil
	}
	if req.Policy != "" {
		// A runtime that passes the pod's annotations gives the plugin the
		// annotation's bare NAME. Where the pod policy source reads the
		// same annotation as the object NAMESPACE/NAME, that is the
		// policy; otherwise NAME stays what it names on this node.
		if !strings.Contains(req.Policy, "/") {
			if pol, err := g.podPolicy(ctx, *req.Pod); err == nil && pol == req.Pod.Namespace+"/"+req.Policy {
				req.Policy = pol
			}
		}
		return req, nil
	}
	pol, err := g.podPolicy(ctx, *req.Pod)
	if err != nil {
		return req, fmt.Errorf("policy of pod %s/%s: %w", req.Pod.Namespace, req.Pod.Name, err)
	}
	req.Policy = pol
	return req, nil
}

// checkAttach refuses a request that does not name exactly one target or
// names an unknown policy. It returns the policy to attach under.
func (g *Gateway) checkAttach(req control.AttachRequest) (string, error) {
	targets := 0
	for _, set := range []bool{req.Container != "", req.PID != 0, req.Netns != ""} {
		if set {
			targets++
		}
	}
	if targets != 1 {
		return "", fmt.Errorf("%w: name exactly one target: a container, --pid or --netns", ErrBadRequest)
	}
	pol := req.Policy
	if pol == "" {
		pol = g.cfg.DefaultPolicy
	}
	if g.policies.Get(pol) == nil {
		return "", fmt.Errorf("%w: unknown policy %q (known: %v)", ErrNotFound, pol, g.policies.Names())
	}
	if req.Interface != "" && !validIfName(req.Interface) {
		return "", fmt.Errorf("%w: interface name %q: 1 to 15 bytes, no '/', ':' or whitespace, not '.', '..' or 'lo'", ErrBadRequest, req.Interface)
	}
	return pol, nil
}

// validIfName reports whether the kernel would take name for a new
// interface, and it is not lo.
func validIfName(name string) bool {
	if len(name) == 0 || len(name) > 15 || name == "." || name == ".." || name == "lo" {
		return false
	}
	for _, c := range name {
		if c == '/' || c == ':' || c <= ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

// openTarget opens the namespace req names and checks the agent's name and
// that the namespace is not the gateway's own.
func (g *Gateway) openTarget(ctx context.Context, req control.AttachRequest) (target, error) {
	var t target
	var err error
	switch {
	case req.Container != "":
		t, err = g.openContainer(ctx, req.Container)
	case req.PID != 0:
		t, err = openPID(req.PID)
	default:
		t, err = openNetns(req.Netns)
	}
	if err != nil {
		return target{}, err
	}
	if req.Name != "" {
		t.name = req.Name
	}
	if !validName.MatchString(t.name) {
		t.ns.Close()
		return target{}, fmt.Errorf("%w: agent name %q: use letters, digits, '.', '_' or '-' (at most 63)", ErrBadRequest, t.name)
	}
	if t.ns.IsHost() {
		t.ns.Close()
		return target{}, fmt.Errorf("%w: %s is the gateway's own network namespace", ErrUnreachable, t.desc)
	}
	return t, nil
}

func (g *Gateway) openContainer(ctx context.Context, nameOrID string) (target, error) {
	if g.containers == nil {
		return target{}, fmt.Errorf("%w: no container engine configured; use --pid or --netns", ErrBadRequest)
	}
	id, name, pid, notes, err := g.containers.Resolve(ctx, nameOrID)
	if err != nil {
		return target{}, err
	}
	ns, err := tun.NetnsOfPID(pid)
	if err != nil {
		return target{}, err
	}
	return target{ns: ns, desc: "container:" + name, name: name, containerID: id, pid: pid, notes: notes}, nil
}

func openPID(pid int) (target, error) {
	ns, err := tun.NetnsOfPID(pid)
	if errors.Is(err, os.ErrNotExist) {
		return target{}, fmt.Errorf("%w: no process with pid %d", ErrNotFound, pid)
	}
	if err != nil {
		return target{}, err
	}
	return target{ns: ns, desc: "pid:" + strconv.Itoa(pid), name: "pid-" + strconv.Itoa(pid), pid: pid}, nil
}

func openNetns(path string) (target, error) {
	ns, err := tun.OpenNetns(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return target{}, fmt.Errorf("%w: no network namespace at %s", ErrNotFound, path)
	case errors.Is(err, tun.ErrNotNetns):
		return target{}, fmt.Errorf("%w: %s is not a network namespace", ErrBadRequest, path)
	case err != nil:
		return target{}, err
	}
	return target{ns: ns, desc: "netns:" + path, name: baseName(path)}, nil
}

// reserve claims t's name and namespace, so that the slow part of attach
// can run unlocked.
func (g *Gateway) reserve(t target) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return ErrShuttingDown
	}
	if _, ok := g.agents[t.name]; ok {
		return fmt.Errorf("%w: an agent called %q is already attached", ErrConflict, t.name)
	}
	if other, ok := g.byNetns[t.ns.ID()]; ok {
		return fmt.Errorf("%w: %s is already attached as agent %q", ErrConflict, t.desc, other)
	}
	if len(g.agents) >= g.cfg.Limits.Agents {
		return fmt.Errorf("%w: %d agents are attached, the most limits.agents allows", ErrLimit, g.cfg.Limits.Agents)
	}
	g.agents[t.name] = nil
	g.byNetns[t.ns.ID()] = t.name
	return nil
}

func baseName(path string) string {
	for i := len(path) - 1; i >= 0; i-- {
		if path[i] == '/' {
			return path[i+1:]
		}
	}
	return path
}

// Detach detaches the agent called name, closing every flow it has.
func (g *Gateway) Detach(name string) error {
	g.mu.Lock()
	a, ok := g.agents[name]
	if !ok || a == nil {
		g.mu.Unlock()
		return fmt.Errorf("%w: no agent called %q", ErrNotFound, name)
	}
	delete(g.agents, name)
	delete(g.byNetns, a.ns.ID())
	g.mu.Unlock()
	g.forgetAttach(name)
	a.close()
	g.log.Info("agent detached", "agent", name)
	return nil
}

// DetachRequest detaches the agent called name at a user's request: its
// container, if it has one, is no longer followed either.
func (g *Gateway) DetachRequest(name string) error {
	g.mu.Lock()
	a := g.agents[name]
	g.mu.Unlock()
	if a != nil && a.containerID != "" && g.follower != nil {
		g.follower.Forget(a.containerID)
	}
	if a != nil && a.containerID != "" {
		g.forgetContainer(a.containerID)
	}
	return g.Detach(name)
}

// DetachContainer detaches the agent attached from container id, if any.
func (g *Gateway) DetachContainer(id string) error {
	g.mu.Lock()
	var name string
	for n, a := range g.agents {
		if a != nil && a.containerID == id {
			name = n
		}
	}
	g.mu.Unlock()
	if name == "" {
		return fmt.Errorf("%w: no agent for container %s", ErrNotFound, id)
	}
	return g.Detach(name)
}
