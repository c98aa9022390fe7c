package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"github.com/hashicorp/go-hclog"

	"github.com/clawnet/clawnet/container"
	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/internal/resolvconf"
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

// fixProcessDNS makes name lookups work for a process attached by PID whose
// resolv.conf names only resolvers it cannot reach through the TUN (a
// loopback one). It rewrites the file only when the process has a mount
// namespace of its own: one that shares the gateway host's would be the
// host's own resolv.conf, which is never touched. It returns notes for the
// user.
func fixProcessDNS(pid int, gw netip.Addr) []string {
	self, err1 := os.Readlink("/proc/self/ns/mnt")
	theirs, err2 := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/mnt")
	if err1 != nil || err2 != nil {
		return nil
	}
	if self == theirs {
		return []string{fmt.Sprintf("the process shares the host's filesystem: its resolv.conf is left alone; if it names a loopback resolver, point it at %s", gw)}
	}
	ch, err := resolvconf.FixPID(pid, gw)
	if err != nil {
		return []string{"DNS: " + err.Error()}
	}
	if ch.Changed {
		return []string{fmt.Sprintf("DNS: %s named resolvers the agent cannot reach (%s); it now names the gateway %s", ch.Path, strings.Join(ch.Dropped, ", "), gw)}
	}
	return nil
}
