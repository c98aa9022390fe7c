package gateway

import (
	"context"
	"errors"

	"github.com/hashicorp/go-hclog"

	"github.com/clawnet/clawnet/container"
	"github.com/clawnet/clawnet/gateway/control"
)

// containerAttacher is the gateway side of the container Watcher's seam.
type containerAttacher struct{ g *Gateway }

var _ container.Attacher = containerAttacher{}

func (c containerAttacher) AttachContainer(ctx context.Context, a container.Attachment) error {
	_, err := c.g.Attach(ctx, control.AttachRequest{Container: a.ContainerID, Name: a.Agent, Policy: a.Policy})
	return err
}

func (c containerAttacher) DetachContainer(_ context.Context, id string) error {
	err := c.g.DetachContainer(id)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// followContainers connects to the container engine, if one answers, so that
// containers can be attached by name and are followed through their life:
// stopped or removed ones are detached, restarted ones attached again with
// the same policy. It returns the function that stops following.
func (g *Gateway) followContainers(ctx context.Context, log hclog.Logger) (stop func()) {
	ec, err := container.NewClientFromEnv()
	if err != nil {
		log.Info("no container engine; container targets are refused", "error", err)
		return func() {}
	}
	g.Containers = container.Resolver{Client: ec, GatewayDNS: g.gw4}
	g.watcher = container.NewWatcher(container.WatcherConfig{Client: ec, Attacher: containerAttacher{g}, Logger: log.Named("containers"), GatewayDNS: g.gw4})
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); g.watcher.Run(wctx) }()
	return func() { cancel(); <-done; ec.Close() }
}
