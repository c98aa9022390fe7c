package container

import (
	"context"
	"net/netip"
)

// Resolver finds a container for the daemon's attach: it implements the
// gateway's ContainerResolver. It refuses, with the one-line errors of
// CheckAttachable, a container that is missing, stopped or has any other
// network, and points the container's resolv.conf at the gateway when its
// nameservers cannot reach it, or creates one when it has none (harmless
// before the TUN exists: such a nameserver was unusable anyway). What it
// did about DNS, or what the user must do, comes back as a note: it never
// refuses a container for its DNS.
type Resolver struct {
	Client *Client
	// GatewayDNS is the nameserver written into resolv.conf. Zero:
	// DefaultGatewayDNS.
	GatewayDNS netip.Addr
}

// Resolve returns the container's ID, its name, the host PID of its init
// process and the attach notes.
func (r Resolver) Resolve(ctx context.Context, nameOrID string) (id, name string, pid int, notes []string, err error) {
	info, err := r.Client.Inspect(ctx, nameOrID)
	if err != nil {
		return "", "", 0, nil, err
	}
	if err := CheckAttachable(info); err != nil {
		return "", "", 0, nil, err
	}
	gw := r.GatewayDNS
	if !gw.IsValid() {
		gw = DefaultGatewayDNS
	}
	ch, err := FixResolvConf(info, gw)
	if n := ResolvConfNote(ch, err, gw); n != "" {
		notes = append(notes, n)
	}
	return info.ID, info.Name, info.Pid, notes, nil
}
