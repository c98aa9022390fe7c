package suite

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/clawnet/clawnet/bench/internal/report"
)

// imageRepo is the local repository of the suite's container image: a
// static busybox and the probe, imported from a tar (nothing is pulled).
const imageRepo = "clawbench-probe"

// runLabel marks the suite's containers with the pid of the run that
// made them, so that a later run can remove those of a run that died.
const runLabel = "clawbench.run"

// busyboxPath is where Debian's busybox-static puts its binary.
const busyboxPath = "/bin/busybox"

// dockerSystem is a container on Docker's default bridge running the
// probe server, its port published on the host's 127.0.0.1 with `docker
// run -p`: what the engine's own publishing costs (docker-proxy, the
// userland proxy, for connections to 127.0.0.1). It has inbound figures
// only: the container is not a client of the server namespace.
type dockerSystem struct {
	t         *topology
	container string // its name
	port      uint16 // published on 127.0.0.1, to the container's probePort
	started   bool
	proxy     int // docker-proxy's pid for the port, 0 when there is none
	// Info says which engine and which forwarder, for the run's record.
	info string
}

func (d *dockerSystem) name() string       { return report.Docker }
func (d *dockerSystem) netns() string      { return "" }
func (d *dockerSystem) target() netip.Addr { return netip.Addr{} }
func (d *dockerSystem) pid() int           { return d.proxy }

func (d *dockerSystem) inboundAddr() netip.AddrPort {
	return onLoopback(d.port)
}

// alive reports a container that is no longer running.
func (d *dockerSystem) alive() error {
	if !d.started {
		return errors.New("the container was never started")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := dockerCmd(ctx, "inspect", "-f", "{{.State.Running}} {{.State.Status}} {{.State.ExitCode}}", d.container)
	if err != nil {
		return fmt.Errorf("docker inspect %s: %w: %s", d.container, err, out)
	}
	if f := strings.Fields(out); len(f) == 0 || f[0] != "true" {
		return fmt.Errorf("container %s is not running: %s", d.container, out)
	}
	return nil
}

func (d *dockerSystem) setup(ctx context.Context) error {
	version, err := dockerEngine(ctx)
	if err != nil {
		return err
	}
	image, err := buildImage(ctx, d.t.probe)
	if err != nil {
		return err
	}
	if d.port, err = freePort(); err != nil {
		return err
	}
	d.container = d.t.nsName("docker")
	args := []string{"run", "-d", "--rm", "--pull", "never", "--name", d.container,
		"--label", fmt.Sprintf("%s=%d", runLabel, os.Getpid()),
		"-p", fmt.Sprintf("127.0.0.1:%d:%d", d.port, probePort),
		image, "/usr/local/bin/" + filepath.Base(d.t.probe), "server", "-listen", fmt.Sprintf(":%d", probePort)}
	if out, err := dockerCmd(ctx, args...); err != nil {
		return fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, out)
	}
	d.started = true
	if err := waitProbe(ctx, d.inboundAddr()); err != nil {
		logs, _ := dockerCmd(ctx, "logs", "--tail", "20", d.container)
		return fmt.Errorf("%w (container log: %s)", err, logs)
	}
	forwarder := "no docker-proxy for the port (userland-proxy off?)"
	if d.proxy = findDockerProxy(d.port); d.proxy > 0 {
		forwarder = "docker-proxy"
	}
	d.info = fmt.Sprintf("engine %s, %s", version, forwarder)
	return nil
}

func (d *dockerSystem) close() error {
	if !d.started {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := dockerCmd(ctx, "rm", "-f", d.container); err != nil {
		return fmt.Errorf("docker rm -f %s: %w: %s", d.container, err, out)
	}
	return nil
}

// dockerCmd runs the docker CLI and returns its trimmed output.
func dockerCmd(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// dockerEngine returns the version of the Docker engine that answers, or
// why none does.
func dockerEngine(ctx context.Context) (string, error) {
	if _, err := exec.LookPath("docker"); err != nil {
		return "", errors.New("no docker command: `make deps` installs the engine, scripts/docker-setup.sh starts it")
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	out, err := dockerCmd(ctx, "version", "-f", "{{.Server.Version}}")
	if err != nil || out == "" {
		return "", fmt.Errorf("no Docker engine answers (docker version: %v: %s): scripts/docker-setup.sh starts one", err, firstLine([]byte(out)))
	}
	return out, nil
}

// findDockerProxy returns the pid of the docker-proxy that serves
// 127.0.0.1:port, or 0.
func findDockerProxy(port uint16) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	want := strconv.Itoa(int(port))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "docker-proxy" {
			continue
		}
		if i := slices.Index(args, "-host-port"); i >= 0 && i+1 < len(args) && args[i+1] == want {
			return pid
		}
	}
	return 0
}

// removeStaleContainers removes the containers of runs whose process is
// gone (one that was SIGKILLed could not remove its own).
func removeStaleContainers(ctx context.Context, log func(string, ...any)) {
	out, err := dockerCmd(ctx, "ps", "-a", "--filter", "label="+runLabel, "--format", `{{.Names}} {{.Label "`+runLabel+`"}}`)
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		name, pidStr, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || !errors.Is(err, syscall.ESRCH) {
			continue // that run is still alive
		}
		if out, err := dockerCmd(ctx, "rm", "-f", name); err != nil {
			log("remove stale container %s: %v: %s", name, err, out)
		} else {
			log("removed stale container %s", name)
		}
	}
}

// buildImage makes a root filesystem of the static busybox and the probe,
// imports it as clawbench-probe:<content hash> unless that image is
// already there, and returns its reference. The probe is built with
// -trimpath, so the same source gives the same image run after run.
func buildImage(ctx context.Context, probeBin string) (string, error) {
	files := map[string]string{
		"bin/busybox": busyboxPath,
		"usr/local/bin/" + filepath.Base(probeBin): probeBin,
	}
	for name, src := range files {
		if err := checkStatic(src); err != nil {
			return "", fmt.Errorf("image file %s: %w", name, err)
		}
	}
	var buf bytes.Buffer
	if err := writeRootfs(&buf, files); err != nil {
		return "", err
	}
	sum := sha256.Sum256(buf.Bytes())
	ref := imageRepo + ":" + hex.EncodeToString(sum[:])[:16]
	if _, err := dockerCmd(ctx, "image", "inspect", ref); err == nil {
		return ref, nil
	}
	cmd := exec.CommandContext(ctx, "docker", "import", "-", ref)
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("docker import %s: %w: %s", ref, err, bytes.TrimSpace(out))
	}
	pruneImages(ctx, ref)
	return ref, nil
}

// pruneImages removes the suite's images of other contents imported over
// an hour ago, so that changing the probe does not pile them up; a newer
// one may be another run's, about to start, and one a container uses
// stays (docker rmi refuses).
func pruneImages(ctx context.Context, keep string) {
	out, err := dockerCmd(ctx, "images", imageRepo, "--format", "{{.Repository}}:{{.Tag}}\t{{.CreatedAt}}")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		ref, created, ok := strings.Cut(line, "\t")
		if !ok || ref == keep {
			continue
		}
		t, err := time.Parse("2006-01-02 15:04:05 -0700 MST", created)
		if err != nil || time.Since(t) < time.Hour {
			continue
		}
		dockerCmd(ctx, "rmi", ref)
	}
}

// writeRootfs writes a deterministic tar (same inputs, same bytes, so the
// content hash finds an earlier run's image): the directories a container
// needs, busybox with its applets linked in /bin, and files.
func writeRootfs(w *bytes.Buffer, files map[string]string) error {
	applets, err := exec.Command(files["bin/busybox"], "--list").Output()
	if err != nil {
		return fmt.Errorf("%s --list: %w", files["bin/busybox"], err)
	}
	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0)
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "tmp", "usr", "usr/local", "usr/local/bin"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: mode, ModTime: epoch}); err != nil {
			return err
		}
	}
	put := func(name string, mode int64, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(b)), ModTime: epoch}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := put("etc/passwd", 0o644, []byte("root:x:0:0:root:/:/bin/sh\n")); err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		b, err := os.ReadFile(files[name])
		if err != nil {
			return err
		}
		if err := put(name, 0o755, b); err != nil {
			return err
		}
	}
	list := strings.Fields(string(applets))
	slices.Sort(list)
	for _, a := range list {
		if a == "busybox" || strings.Contains(a, "/") {
			continue
		}
		if err := tw.WriteHeader(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777, ModTime: epoch}); err != nil {
			return err
		}
	}
	return tw.Close()
}

// checkStatic refuses a file that is not a statically linked executable:
// the image has no libc.
func checkStatic(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) && path == busyboxPath {
			return fmt.Errorf("%s missing: apt-get install busybox-static", path)
		}
		return fmt.Errorf("%s: not an ELF executable: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked; the image has no libc (apt-get install busybox-static)", path)
		}
	}
	return nil
}
