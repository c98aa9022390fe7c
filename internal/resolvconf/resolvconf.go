// Package resolvconf points a namespace's resolv.conf at the clawnet gateway
// when its nameservers cannot reach it, and gives one a root that has none.
// It knows files and paths only: the container package calls it for an
// engine's copy of the file or a container's root, the gateway for a process
// attached by PID. It must never follow a symlink out of the root it was
// given, never create anything but that root's /etc/resolv.conf (and /etc),
// and never write into the root of the process that calls it.
package resolvconf

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
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
	// Created: there was no file; one naming the gateway was created.
	Created bool
	// Missing: there was no file, and none could be created (see the error).
	Missing bool
}

// Sentinels callers and notes branch on.
var (
	// ErrReadOnly: the file needs a change (or creating) and its
	// filesystem is read-only.
	ErrReadOnly = errors.New("read-only")
	// ErrSharedFilesystem: the process's root is the caller's own, so its
	// resolv.conf is the caller's (the host's) and is left alone.
	ErrSharedFilesystem = errors.New("shares this process's filesystem")
)

// FixPID fixes the resolv.conf a process sees (a container's init, or a
// bare process attached with --pid), in that process's own mount namespace:
// /proc/PID/root/etc/resolv.conf, resolved inside that root with
// openat2(RESOLVE_IN_ROOT), so that a symlink planted there cannot make this
// root process write a host file. When the root has no resolv.conf (Podman
// writes none for a container without network, and scratch images have none),
// one naming the gateway is created there, owned like its /etc. A process
// whose root is the caller's own is refused (ErrSharedFilesystem): its file
// is the host's. A read-only root yields ErrReadOnly when the file
// needed a change.
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
	var self, theirs unix.Stat_t
	if unix.Stat("/proc/self/root", &self) == nil && unix.Fstat(dir, &theirs) == nil &&
		self.Dev == theirs.Dev && self.Ino == theirs.Ino {
		return Change{}, fmt.Errorf("pid %d %w: its resolv.conf is left alone", pid, ErrSharedFilesystem)
	}
	path := root + "/etc/resolv.conf"
	how := unix.OpenHow{Flags: unix.O_RDWR | unix.O_CLOEXEC, Resolve: unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS}
	fd, err := unix.Openat2(dir, "etc/resolv.conf", &how)
	if errors.Is(err, unix.EROFS) {
		// Read it anyway: a read-only file that already works is fine.
		how.Flags = unix.O_RDONLY | unix.O_CLOEXEC
		fd, err = unix.Openat2(dir, "etc/resolv.conf", &how)
	}
	if errors.Is(err, unix.ENOENT) {
		return create(dir, path, gw)
	}
	if err != nil {
		return Change{}, fmt.Errorf("open %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	return FixFile(f, gw)
}

// create makes etc/resolv.conf naming the gateway under the root dir (an
// O_PATH descriptor of /proc/PID/root), creating etc too if needed. Every
// step is resolved inside that root; the file is created exclusively, so
// a dangling symlink in its place is refused rather than followed.
func create(dir int, path string, gw netip.Addr) (Change, error) {
	ch := Change{Path: path, Missing: true}
	inRoot := uint64(unix.RESOLVE_IN_ROOT | unix.RESOLVE_NO_MAGICLINKS)
	openEtc := func() (int, error) {
		return unix.Openat2(dir, "etc", &unix.OpenHow{Flags: unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC, Resolve: inRoot})
	}
	etc, err := openEtc()
	madeEtc := false
	if errors.Is(err, unix.ENOENT) {
		if err = unix.Mkdirat(dir, "etc", 0o755); err == nil || errors.Is(err, unix.EEXIST) {
			madeEtc = err == nil
			etc, err = openEtc()
		}
	}
	if errors.Is(err, unix.EROFS) {
		return ch, fmt.Errorf("%s does not exist and the root filesystem is %w", path, ErrReadOnly)
	}
	if err != nil {
		return ch, fmt.Errorf("%s does not exist; open its directory: %w", path, err)
	}
	defer unix.Close(etc)
	var owner unix.Stat_t
	if madeEtc {
		// Owned like the root, readable by every user (whatever our umask).
		if err := unix.Fstat(dir, &owner); err == nil {
			_ = unix.Fchown(etc, int(owner.Uid), int(owner.Gid))
		}
		_ = unix.Fchmod(etc, 0o755)
	}
	if err := unix.Fstat(etc, &owner); err != nil {
		return ch, fmt.Errorf("stat %s: %w", filepath.Dir(path), err)
	}
	fd, err := unix.Openat2(etc, "resolv.conf", &unix.OpenHow{
		Flags:   unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL | unix.O_CLOEXEC,
		Mode:    0o644,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	switch {
	case errors.Is(err, unix.EROFS):
		return ch, fmt.Errorf("%s does not exist and the root filesystem is %w", path, ErrReadOnly)
	case errors.Is(err, unix.EEXIST):
		return ch, fmt.Errorf("%s is a symlink to a file that does not exist: left alone", path)
	case err != nil:
		return ch, fmt.Errorf("create %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	defer f.Close()
	// The container's root user owns it, as the rest of its /etc (in a
	// rootless container, host root would be nobody); every user reads it.
	_ = f.Chown(int(owner.Uid), int(owner.Gid))
	if err := f.Chmod(0o644); err != nil {
		return ch, fmt.Errorf("chmod %s: %w", path, err)
	}
	out, _, _ := Rewrite(nil, gw)
	if _, err := f.Write(out); err != nil {
		return ch, fmt.Errorf("write %s: %w", path, err)
	}
	return Change{Path: path, Changed: true, Created: true}, nil
}

// FixFile rewrites the open resolv.conf f (see Rewrite) in place: it may be
// a bind mount, which a rename would not reach. The caller opened it without
// following symlinks. A file opened read-only (its filesystem is) that
// needs a change yields ErrReadOnly.
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
	ch.Dropped = dropped
	if !changed {
		return ch, nil
	}
	if fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0); err == nil && fl&unix.O_ACCMODE == unix.O_RDONLY {
		return ch, fmt.Errorf("%s names no resolver the agent can reach and its filesystem is %w", path, ErrReadOnly)
	}
	// Write, then cut the tail: a lookup racing with this never sees an
	// empty file (which would mean 127.0.0.1).
	if _, err := f.WriteAt(out, 0); err != nil {
		return ch, fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Truncate(int64(len(out))); err != nil {
		return ch, fmt.Errorf("truncate %s: %w", path, err)
	}
	ch.Changed = true
	return ch, nil
}

// Note is the one line a person should read about a fix (an attach note),
// or "" when there is nothing to say. err is the fix's error: DNS trouble
// never fails an attach, the gateway answers DNS on every address anyway,
// so what the user must do is said here instead.
func Note(ch Change, err error, gw netip.Addr) string {
	mount := fmt.Sprintf("mount a file holding \"nameserver %s\" there (run the container with -v FILE:/etc/resolv.conf:ro), or use clawnet run", gw)
	switch {
	case errors.Is(err, ErrReadOnly) && ch.Missing:
		return fmt.Sprintf("DNS: the agent has no /etc/resolv.conf and its root filesystem is read-only, so name lookups go to 127.0.0.1 and fail: %s", mount)
	case errors.Is(err, ErrReadOnly):
		return fmt.Sprintf("DNS: the agent's /etc/resolv.conf names no resolver it can reach (%s) and is read-only, so name lookups fail: %s",
			orNone(ch.Dropped), mount)
	case err != nil:
		return "DNS: " + err.Error()
	case ch.Created:
		return fmt.Sprintf("DNS: the agent had no /etc/resolv.conf; created one naming the gateway %s", gw)
	case ch.Changed:
		return fmt.Sprintf("DNS: %s named resolvers the agent cannot reach (%s); it now names the gateway %s", ch.Path, orNone(ch.Dropped), gw)
	}
	return ""
}

func orNone(ss []string) string {
	if len(ss) == 0 {
		return "none"
	}
	return strings.Join(ss, ", ")
}
