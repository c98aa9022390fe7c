// Package resolvconf points a namespace's resolv.conf at the clawnet gateway
// when its nameservers cannot reach it. It knows files and paths only: the
// container package calls it for an engine's copy of the file, the gateway
// for a process attached by PID. It must never follow a symlink out of the
// root it was given, nor create a file that did not exist.
package resolvconf

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxSize bounds what is read from a file the agent controls.
const maxSize = 64 << 10

// Rewrite points a resolv.conf at the gateway when its nameservers
// cannot reach it. The gateway answers every packet to port 53 whatever its
// destination, so any nameserver routed through the TUN works as it is; a
// loopback one (Docker's embedded 127.0.0.11, a host's 127.0.0.53) or an
// unspecified or zoned link-local one never leaves the namespace. Those lines
// are commented out, and when no usable nameserver is left the gateway is
// added. A file with no nameserver at all (resolvers then use 127.0.0.1) gets
// the gateway too. It returns the new content and the nameservers it
// dropped; changed is false when the file already works.
func Rewrite(content []byte, gw netip.Addr) (out []byte, dropped []string, changed bool) {
	lines := strings.SplitAfter(string(content), "\n")
	var b strings.Builder
	usable := 0
	for _, ln := range lines {
		f := strings.Fields(ln)
		if len(f) >= 2 && f[0] == "nameserver" {
			if nameserverReachable(f[1]) {
				usable++
			} else {
				dropped = append(dropped, f[1])
				b.WriteString("# clawnet: " + strings.TrimRight(ln, "\n") + " (unreachable through the gateway)\n")
				continue
			}
		}
		b.WriteString(ln)
	}
	if len(dropped) == 0 && usable > 0 {
		return content, nil, false
	}
	s := b.String()
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	if usable == 0 {
		s += "nameserver " + gw.String() + " # clawnet gateway\n"
	}
	return []byte(s), dropped, true
}

// nameserverReachable says whether a query to ns would leave the namespace
// through its default route (the TUN). Unparsable entries are left alone:
// the resolver ignores them too.
func nameserverReachable(ns string) bool {
	a, err := netip.ParseAddr(ns)
	if err != nil {
		return true
	}
	a = a.Unmap()
	switch {
	case a.IsLoopback(), a.IsUnspecified():
		return false
	case a.Zone() != "":
		// A zoned address names an interface that is not clawnet's TUN.
		return false
	}
	return true
}

// Change reports what a fix did.
type Change struct {
	Path    string   // the file written, as seen from the host
	Dropped []string // nameservers commented out
	Changed bool
}

// FixPID fixes the resolv.conf a bare process sees (clawnet attach --pid):
// /proc/PID/root/etc/resolv.conf, resolved inside that root with
// openat2(RESOLVE_IN_ROOT), so that a symlink planted there cannot make this
// root process write a host file.
func FixPID(pid int, gw netip.Addr) (Change, error) {
	if pid <= 0 {
		return Change{}, fmt.Errorf("fix resolv.conf: invalid pid %d", pid)
	}
	root := "/proc/" + strconv.Itoa(pid) + "/root"
	dir, err := unix.Open(root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return Change{}, fmt.Errorf("open %s: %w", root, err)
	}
	defer unix.Close(dir)
	fd, err := unix.Openat2(dir, "etc/resolv.conf", &unix.OpenHow{
		Flags:   unix.O_RDWR | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS,
	})
	path := root + "/etc/resolv.conf"
	if errors.Is(err, unix.ENOENT) {
		// No file: the resolver falls back to 127.0.0.1. Creating one inside
		// a container's root is not clawnet's business; say so instead.
		return Change{Path: path}, fmt.Errorf("%s does not exist: name lookups will use 127.0.0.1 and fail; give the container an /etc/resolv.conf with nameserver %s", path, gw)
	}
	if err != nil {
		return Change{}, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	return FixFile(f, gw)
}

// FixFile rewrites the open resolv.conf f (see Rewrite) in place: it may be
// a bind mount, which a rename would not reach. The caller opened it without
// following symlinks.
func FixFile(f *os.File, gw netip.Addr) (Change, error) {
	path := f.Name()
	ch := Change{Path: path}
	st, err := f.Stat()
	if err != nil {
		return ch, fmt.Errorf("stat %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return ch, fmt.Errorf("%s is not a regular file", path)
	}
	content, err := io.ReadAll(io.LimitReader(f, maxSize+1))
	if err != nil {
		return ch, fmt.Errorf("read %s: %w", path, err)
	}
	if len(content) > maxSize {
		return ch, fmt.Errorf("%s is larger than %d bytes", path, maxSize)
	}
	out, dropped, changed := Rewrite(content, gw)
	ch.Dropped, ch.Changed = dropped, changed
	if !changed {
		return ch, nil
	}
	// Write, then cut the tail: a lookup racing with this never sees an
	// empty file (which would mean 127.0.0.1).
	if _, err := f.WriteAt(out, 0); err != nil {
		return ch, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Truncate(int64(len(out))); err != nil {
		return ch, fmt.Errorf("truncate %s: %w", path, err)
	}
	return ch, nil
}
