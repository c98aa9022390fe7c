package container

import (
	"errors"
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
// symlink) when there is one, else the container's /etc/resolv.conf in its
// own mount namespace, through /proc/PID/root and resolved inside the
// container's root, so that a symlink planted there cannot make this root
// process write a host file; a container with no such file (Podman gives a
// --network none container none) gets one naming the gateway. The file is
// rewritten in place: it is a bind mount, and a rename would not reach the
// container. DNS trouble never refuses an attach: ResolvConfNote says what
// the user must do instead.
func FixResolvConf(info Info, gw netip.Addr) (ResolvConfChange, error) {
	if info.ResolvConfPath != "" {
		f, err := os.OpenFile(info.ResolvConfPath, os.O_RDWR|unix.O_NOFOLLOW, 0)
		if errors.Is(err, unix.EROFS) {
			f, err = os.OpenFile(info.ResolvConfPath, os.O_RDONLY|unix.O_NOFOLLOW, 0)
		}
		if err == nil {
			defer f.Close()
			return resolvconf.FixFile(f, gw)
		}
		if !errors.Is(err, os.ErrNotExist) || info.Pid <= 0 {
			return ResolvConfChange{}, err // an *os.PathError: "open PATH: why"
		}
		// A remote or rootless engine's path is not ours to see; go through
		// the process instead.
	}
	return resolvconf.FixPID(info.Pid, gw)
}

// ResolvConfNote is the attach note for what FixResolvConf did or could
// not do ("" when there is nothing to say).
func ResolvConfNote(ch ResolvConfChange, err error, gw netip.Addr) string {
	return resolvconf.Note(ch, err, gw)
}
