package gateway

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"

	"github.com/clawnet/clawnet/internal/resolvconf"
)

// ContainerResolver finds a container's process through its engine.
type ContainerResolver interface {
	// Resolve returns the container's ID, its name (without a leading
	// slash), the PID of its main process, and notes for the user (how its
	// DNS was set up). It refuses a container that is not running or has a
	// network besides none.
	Resolve(ctx context.Context, nameOrID string) (id, name string, pid int, notes []string, err error)
}

// ContainerFollower attaches containers and follows them through their
// life: a stopped or removed container is detached, a restarted one
// attached again with the same name, policy and published ports. It
// attaches, publishes and detaches through the gateway's Attach, Publish,
// Unpublish and DetachContainer, so it must not be called back from them.
type ContainerFollower interface {
	// Follow attaches the running container nameOrID as agent (the
	// container's name when empty) under policy (the default when empty),
	// publishes the ports publish names (control.ParsePublish specs; the
	// attach fails, attaching nothing, if one cannot be), and follows it
	// from then on. It returns the agent's name.
	Follow(ctx context.Context, nameOrID, agent, policy string, publish []string) (string, error)
	// Forget stops following a container; it does not detach it.
	Forget(containerID string)
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
	if n := resolvconf.Note(ch, err, gw); n != "" {
		return []string{n}
	}
	return nil
}
