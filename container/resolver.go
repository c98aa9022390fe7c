package container

import (
	"context"
	"fmt"
	"net/netip"
)

// Resolver finds a container for the daemon's attach: it implements the
// gateway's ContainerResolver. It refuses, with the one-line errors of
// CheckAttachable, a container that is missing, stopped or has any other
// network, and points the container's resolv.conf at the gateway when its
// nameservers cannot reach it (harmless before the TUN exists: such a
// nameserver was unusable anyway).
type Resolver struct {
	Client *Client
	// GatewayDNS is the nameserver written into resolv.conf. Zero:
	// DefaultGatewayDNS.
	GatewayDNS netip.Addr
}

// Resolve returns the container's ID, its name and the host PID of its init
// process.
func (r Resolver) Resolve(ctx context.Context, nameOrID string) (id, name string, pid int, err error) {
	info, err := r.Client.Inspect(ctx, nameOrID)
	if err != nil {
		return "", "", 0, err
	}
	if err := CheckAttachable(info); err != nil {
		return "", "", 0, err
	}
	gw := r.GatewayDNS
	if !gw.IsValid() {
		gw = DefaultGatewayDNS
	}
	if _, err := FixResolvConf(info, gw); err != nil {
		return "", "", 0, fmt.Errorf("container %q: point its DNS at the gateway: %w", info.Name, err)
	}
	return info.ID, info.Name, info.Pid, nil
}
