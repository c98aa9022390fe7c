package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/hashicorp/go-hclog"

	"github.com/clawnet/clawnet/container"
	"github.com/clawnet/clawnet/gateway"
	"github.com/clawnet/clawnet/gateway/control"
)

// engine is the container engine clawnetd found, if any: containers can be
// attached by name and are followed through their life (stopped or removed
// ones are detached, restarted ones attached again with the same policy).
// A nil engine refuses container targets.
type engine struct {
	client  *container.Client
	watcher *container.Watcher
	att     *attacher
}

// connectEngine finds the engine's socket. It does not connect yet.
func connectEngine(log hclog.Logger, gw netip.Addr) *engine {
	ec, err := container.NewClientFromEnv()
	if err != nil {
		log.Info("no container engine; container targets are refused", "error", err)
		return nil
	}
	att := &attacher{}
	w := container.NewWatcher(container.WatcherConfig{Client: ec, Attacher: att, Logger: log.Named("containers"), GatewayDNS: gw,
		ConfigPolicy: att.configPolicy})
	return &engine{client: ec, watcher: w, att: att}
}

// options gives the gateway the engine's resolver and follower.
func (e *engine) options(o *gateway.Options, gw netip.Addr) {
	if e == nil {
		return
	}
	o.Containers = container.Resolver{Client: e.client, GatewayDNS: gw}
	o.Follower = follower{e.watcher}
	if o.Config != nil {
		e.att.policyDir = o.Config.PolicyDir
	}
}

// follow starts following the engine's events on behalf of g. The function
// it returns stops following and waits until it has.
func (e *engine) follow(ctx context.Context, g *gateway.Gateway) (stop func()) {
	if e == nil {
		return func() {}
	}
	e.att.g = g
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); e.watcher.Run(wctx) }()
	return func() { cancel(); <-done }
}

func (e *engine) close() {
	if e != nil {
		e.client.Close()
	}
}

// attacher is the Watcher's way into the gateway. Its g is set before the
// Watcher runs or the gateway serves, the only ways the Watcher attaches.
type attacher struct {
	g *gateway.Gateway
	// policyDir is where configPolicy writes the policies it generates.
	policyDir string
}

var _ container.Attacher = (*attacher)(nil)

func (a *attacher) AttachContainer(ctx context.Context, at container.Attachment) error {
	// Without the ports: the Watcher publishes them (PublishPorts), so that
	// a restarted container that cannot have one of them back still has
	// its network.
	_, err := a.g.Attach(ctx, control.AttachRequest{Container: at.ContainerID, Name: at.Agent, Policy: at.Policy})
	return err
}

func (a *attacher) DetachContainer(_ context.Context, id string) error {
	err := a.g.DetachContainer(id)
	if errors.Is(err, gateway.ErrNotFound) {
		return nil
	}
	return err
}

// PublishPorts opens the agent's listeners for specs, all or none: the
// ones it opened are closed again when one fails.
func (a *attacher) PublishPorts(_ context.Context, agent string, specs []string) error {
	ps, err := parsePublish(specs)
	if err != nil {
		return err
	}
	for i, p := range ps {
		if err := a.g.Publish(agent, []control.Publish{p}); err != nil {
			for _, q := range ps[:i] {
				_ = a.g.Unpublish(agent, []control.Publish{q})
			}
			return err
		}
	}
	return nil
}

// UnpublishPorts closes the agent's listeners for specs; one that is not
// open (`clawnet unpublish` closed it, or the agent is gone) is skipped.
func (a *attacher) UnpublishPorts(_ context.Context, agent string, specs []string) error {
	ps, err := parsePublish(specs)
	if err != nil {
		return err
	}
	var first error
	for _, p := range ps {
		if err := a.g.Unpublish(agent, []control.Publish{p}); err != nil && !errors.Is(err, gateway.ErrNotFound) && first == nil {
			first = err
		}
	}
	return first
}

func parsePublish(specs []string) ([]control.Publish, error) {
	ps := make([]control.Publish, 0, len(specs))
	for _, s := range specs {
		p, err := control.ParsePublish(s)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", gateway.ErrBadRequest, err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// follower is the Watcher as the gateway's ContainerFollower.
type follower struct{ w *container.Watcher }

var _ gateway.ContainerFollower = follower{}

func (f follower) Follow(ctx context.Context, nameOrID, agent, policy string, publish []string) (string, error) {
	a, err := f.w.Attach(ctx, nameOrID, agent, policy, publish)
	return a.Agent, err
}

func (f follower) Forget(containerID string) { f.w.Forget(containerID) }
