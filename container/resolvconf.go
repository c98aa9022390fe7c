package container

import (
	"errors"
	"fmt"
	"net/netip"
	"os"

	"golang.org/x/sys/unix"

	"github.com/clawnet/clawnet/internal/resolvconf"
)

// DefaultGatewayDNS is the gateway's address inside every agent namespace
// (the first address of clawnet's 100.96.0.0/16 agent range).
var DefaultGatewayDNS = netip.MustParseAddr("100.96.0.1")

// ResolvConfChange reports what FixResolvConf did.
type ResolvConfChange = resolvconf.Change

// FixResolvConf makes the resolv.conf the container sees usable through the
// gateway (see resolvconf.Rewrite). It writes Docker's or Podman's own copy
// (info.ResolvConfPath, a host path the container cannot turn into a
// symlink) when there is one, else the container's /etc/resolv.conf through
// /proc/PID/root, resolved inside the container's root so that a symlink
// planted there cannot make this root process write a host file. The file
// is rewritten in place: it is a bind mount, and a rename would not reach
// the container.
func FixResolvConf(info Info, gw netip.Addr) (ResolvConfChange, error) {
	if info.ResolvConfPath != "" {
		f, err := os.OpenFile(info.ResolvConfPath, os.O_RDWR|unix.O_NOFOLLOW, 0)
		if err == nil {
			defer f.Close()
			return resolvconf.FixFile(f, gw)
		}
		if !errors.Is(err, os.ErrNotExist) || info.Pid <= 0 {
			return ResolvConfChange{}, fmt.Errorf("open %s: %w", info.ResolvConfPath, err)
		}
		// A remote or rootless engine's path is not ours to see; go through
		// the process instead.
	}
	return resolvconf.FixPID(info.Pid, gw)
}
