package container

import (
	"archive/tar"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/clawnet/clawnet/internal/resolvconf"
)

// HolderImageRepo is the local image the holders run: one static binary,
// imported from the host, never pulled. Named with its registry part so
// that Docker and Podman find it under the same name (see TagImage).
const HolderImageRepo = "localhost/clawnet-holder"

// legacyHolderImageRepo is what earlier clawnets called it (on Docker);
// its images are pruned like old ones of HolderImageRepo.
const legacyHolderImageRepo = "clawnet-holder"

// LabelPublish is on a holder attached with published ports: they are
// listed, comma-separated, in their RunOptions.Publish form, so that the
// engine keeps the record along with the agent's name and policy.
const LabelPublish = "io.clawnet.publish"

// EnvHolderBinary overrides the holder's binary (see RunOptions).
const EnvHolderBinary = "CLAWNET_HOLDER_BINARY"

// EnvEngineCLI names the engine CLI that runs the agent's container (see
// RunOptions.EngineCLI).
const EnvEngineCLI = "CLAWNET_ENGINE_CLI"

// HolderRunDir holds, on Podman, each holder's resolv.conf for its agent
// container (see writeHolderResolvConf).
const HolderRunDir = "/run/clawnet/holders"

// holderRunDir is HolderRunDir; tests move it.
var holderRunDir = HolderRunDir

// RunOptions describe one `clawnet run`.
type RunOptions struct {
	// Name names the agent and its container. Empty: the image's base name
	// and a random suffix.
	Name   string
	Policy string // empty: the daemon's default policy
	// Publish are ports the gateway publishes on the host for the agent,
	// as `clawnet attach --publish` takes them
	// ([HOST_IP:]HOST_PORT:AGENT_PORT[/tcp|udp]). The holder is attached
	// with them; the engine never sees them, and the holder and the agent
	// keep --network none.
	Publish []string
	// AgentConfig are the agent's own configuration files (openclaw.json,
	// MCP client files) and PolicyDir the daemon's policy_dir, for `clawnet
	// run --agent-config`: the CLI generates the policy and sets Policy
	// before it calls Run, which ignores both.
	AgentConfig []string
	PolicyDir   string
	// SetupTimeout ends the agent's setup phase that long after the attach
	// (a Go duration; the daemon keeps the timer). The CLI puts it in its
	// attach request; Run ignores it.
	SetupTimeout string
	// DockerArgs are `docker run` options (Podman's are the same), passed
	// through to the agent's container except the network ones (see
	// README.md).
	DockerArgs []string
	Image      string
	Cmd        []string

	Stdin          io.Reader
	Stdout, Stderr io.Writer

	// Client talks to the engine. Nil: NewClientFromEnv.
	Client *Client
	// EngineCLI runs the agent's container: `docker`, `podman`, or a CLI
	// that takes their run options. Empty: $CLAWNET_ENGINE_CLI if set, else
	// "podman" when the engine says it is Podman and "docker" otherwise,
	// from PATH. It is pointed at the engine's socket with DOCKER_HOST and
	// CONTAINER_HOST (the podman CLI then talks to that service, as a
	// remote client).
	EngineCLI string
	// HolderBinary is a static executable that, run as HolderArgs, blocks
	// until SIGTERM. Empty: $CLAWNET_HOLDER_BINARY if set (for a clawnet
	// built with -race, which cannot be static), else this executable
	// (clawnet), with ["pause"].
	HolderBinary string
	HolderArgs   []string
}

// AttachRequest asks the daemon to attach a running container (by ID),
// exactly as `clawnet attach --name Name --policy Policy [--publish P]...
// Container` would.
type AttachRequest struct {
	Container string
	Name      string
	Policy    string
	// Publish are the ports to publish (RunOptions.Publish); the attach
	// must fail if one cannot be.
	Publish []string
}

// AttachResult is what Run needs to know about the attached holder.
type AttachResult struct {
	// DNS is the gateway's address in the agent's namespace, the
	// nameserver it must use. Zero: DefaultGatewayDNS.
	DNS netip.Addr
}

// AttachFunc attaches a container through the daemon's control API. Run
// calls it once, with the holder, before the agent's container exists.
type AttachFunc func(ctx context.Context, req AttachRequest) (AttachResult, error)

// Run implements `clawnet run`. It starts a holder container with
// --network none running a pause process, attaches the holder's namespace
// through attach, and only then runs the agent's container with
// --network container:HOLDER through the engine's CLI (the only faithful
// way to honour arbitrary run options, -it and -d included). The agent's
// first instruction therefore already has the gateway and nothing else,
// names included: Docker gives the agent the holder's resolv.conf, which
// the attach pointed at the gateway; Podman writes none for a container
// without network, so the agent gets one naming the gateway, mounted
// read-only. It returns the CLI's exit status. The holder is removed here
// when the agent's container is gone by the time the CLI returns (--rm,
// or it was never created), and otherwise by the daemon's Watcher when the
// agent's container is removed.
func Run(ctx context.Context, o RunOptions, attach AttachFunc) (exitCode int, err error) {
	if o.Image == "" {
		return 0, fmt.Errorf("clawnet run: missing image (usage: %s)", RunUsage)
	}
	if attach == nil {
		return 0, errors.New("clawnet run: no attach function")
	}
	hopts, agentArgs, err := splitRunArgs(o.DockerArgs)
	if err != nil {
		return 0, err
	}
	c := o.Client
	if c == nil {
		if c, err = NewClientFromEnv(); err != nil {
			return 0, fmt.Errorf("clawnet run: %w", err)
		}
		defer c.Close()
	}
	name := o.Name
	if name == "" {
		name = nameFromImage(o.Image)
	} else if !validName.MatchString(name) {
		return 0, fmt.Errorf("clawnet run: --name %q: use letters, digits, '_', '.' and '-', starting with a letter or digit", name)
	}
	if _, err := c.Inspect(ctx, name); err == nil {
		return 0, fmt.Errorf("clawnet run: container name %q is already in use: pick another --name", name)
	} else if !errors.Is(err, ErrNotFound) {
		return 0, fmt.Errorf("clawnet run: %w", err)
	}
	eng, err := c.Engine(ctx)
	if err != nil {
		return 0, fmt.Errorf("clawnet run: %w", err)
	}
	podman := eng.Name == EnginePodman

	image, err := ensureHolderImage(ctx, c, o.HolderBinary)
	if err != nil {
		return 0, fmt.Errorf("clawnet run: %w", err)
	}
	holderArgs := o.HolderArgs
	if len(holderArgs) == 0 {
		holderArgs = []string{"pause"}
	}
	labels := map[string]string{LabelRole: "holder", LabelAgent: name, LabelPolicy: o.Policy}
	if len(o.Publish) > 0 {
		labels[LabelPublish] = strings.Join(o.Publish, ",")
	}
	noInit := false
	spec := ContainerSpec{
		Image:      image,
		Entrypoint: []string{"/clawnet"},
		Cmd:        holderArgs,
		Hostname:   hopts.hostname,
		Labels:     labels,
		HostConfig: HostConfig{
			NetworkMode: "none",
			ExtraHosts:  hopts.extraHosts,
			// The pause process needs no privilege at all.
			CapDrop:     []string{"ALL"},
			SecurityOpt: []string{"no-new-privileges"},
			Init:        &noInit,
		},
	}
	if !podman {
		// Docker writes them into the holder's resolv.conf, which the
		// agent shares; Podman writes none for a container without network.
		spec.HostConfig.DNS, spec.HostConfig.DNSSearch, spec.HostConfig.DNSOptions = hopts.dns, hopts.dnsSearch, hopts.dnsOptions
	}
	holderID, err := c.CreateContainer(ctx, HolderName(name), spec)
	if err != nil {
		return 0, fmt.Errorf("clawnet run: holder: %w", err)
	}
	// From here on, every failure removes the holder (which detaches it).
	keepHolder := false
	defer func() {
		if keepHolder {
			return
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if rerr := c.RemoveContainer(rctx, holderID, true); rerr != nil && err == nil {
			err = fmt.Errorf("clawnet run: remove holder: %w", rerr)
		}
		removeHolderFiles(holderID)
	}()
	if err := c.StartContainer(ctx, holderID); err != nil {
		return 0, fmt.Errorf("clawnet run: holder: %w", err)
	}
	res, err := attach(ctx, AttachRequest{Container: holderID, Name: name, Policy: o.Policy, Publish: o.Publish})
	if err != nil {
		return 0, fmt.Errorf("clawnet run: attach: %w", err)
	}

	argv := []string{"run", "--network", "container:" + holderID, "--name", name,
		"--label", LabelRole + "=agent", "--label", LabelAgent + "=" + name,
		"--label", LabelHolder + "=" + holderID}
	if podman && !hopts.ownResolvConf {
		gw := res.DNS
		if !gw.IsValid() {
			gw = DefaultGatewayDNS
		}
		p, err := writeHolderResolvConf(holderID, hopts, gw)
		if err != nil {
			return 0, fmt.Errorf("clawnet run: %w", err)
		}
		argv = append(argv, "--volume", p+":/etc/resolv.conf:ro")
	}
	argv = append(argv, agentArgs...)
	argv = append(argv, o.Image)
	argv = append(argv, o.Cmd...)
	cli := engineCLI(o.EngineCLI, eng)
	cmd := exec.Command(cli, argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.Stdin, o.Stdout, o.Stderr
	// The CLI must reach the engine the holder was created on: docker
	// reads DOCKER_HOST, podman CONTAINER_HOST (as a remote client).
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+c.Socket(), "CONTAINER_HOST=unix://"+c.Socket())
	exitCode, err = runForwardingSignals(cmd)
	if err != nil {
		return 0, fmt.Errorf("clawnet run: %s: %w", cli, err)
	}

	// Keep the holder while the agent's container exists: `docker start`
	// of a stopped agent needs it, and the Watcher removes it with the agent.
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if _, ierr := c.Inspect(ictx, name); ierr == nil || !errors.Is(ierr, ErrNotFound) {
		keepHolder = true
	}
	return exitCode, nil
}

// HolderName is the holder container's name for agent name.
func HolderName(agent string) string { return "clawnet-holder-" + agent }

// engineCLI picks the CLI that runs the agent's container: the one asked
// for, else $CLAWNET_ENGINE_CLI, else the engine's own.
func engineCLI(asked string, eng EngineInfo) string {
	switch {
	case asked != "":
		return asked
	case os.Getenv(EnvEngineCLI) != "":
		return os.Getenv(EnvEngineCLI)
	case eng.Name == EnginePodman:
		return "podman"
	}
	return "docker"
}

// holderResolvConf is where writeHolderResolvConf puts holder id's file.
func holderResolvConf(id string) string {
	return filepath.Join(holderRunDir, id+".resolv.conf")
}

// writeHolderResolvConf writes the resolv.conf the agent container of
// holder id mounts on Podman: the run's --dns, --dns-search and
// --dns-option, pointed at the gateway as an attach would (see
// resolvconf.Rewrite). It is a host file that only root can change, and the
// agent mounts it read-only; it goes with the holder.
func writeHolderResolvConf(id string, h holderOpts, gw netip.Addr) (string, error) {
	var b strings.Builder
	for _, ns := range h.dns {
		b.WriteString("nameserver " + ns + "\n")
	}
	if len(h.dnsSearch) > 0 {
		b.WriteString("search " + strings.Join(h.dnsSearch, " ") + "\n")
	}
	if len(h.dnsOptions) > 0 {
		b.WriteString("options " + strings.Join(h.dnsOptions, " ") + "\n")
	}
	content, _, _ := resolvconf.Rewrite([]byte(b.String()), gw)
	if err := os.MkdirAll(holderRunDir, 0o755); err != nil {
		return "", fmt.Errorf("agent resolv.conf: %w", err)
	}
	p := holderResolvConf(id)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, content, 0o644); err != nil {
		return "", fmt.Errorf("agent resolv.conf: %w", err)
	}
	// Readable by the agent's users whatever our umask, and by a rootless
	// engine that mounts it.
	if err := os.Chmod(tmp, 0o644); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("agent resolv.conf: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("agent resolv.conf: %w", err)
	}
	return p, nil
}

// removeHolderFiles removes what clawnet keeps on the host for holder id.
func removeHolderFiles(id string) {
	_ = os.Remove(holderResolvConf(id))
}

// runForwardingSignals runs cmd and waits for it. Meanwhile clawnet must
// outlive the CLI to clean up: SIGINT (a terminal's ^C, which the CLI in the
// same process group receives itself) is swallowed; SIGTERM and SIGHUP,
// usually sent to clawnet alone, are passed on so that docker forwards them
// to the container.
func runForwardingSignals(cmd *exec.Cmd) (int, error) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			if s != syscall.SIGINT {
				_ = cmd.Process.Signal(s)
			}
		case err := <-done:
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return 128 + int(ws.Signal()), nil
				}
				return ee.ExitCode(), nil
			}
			if err != nil {
				return 0, err
			}
			return 0, nil
		}
	}
}

var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// nameFromImage makes an agent name from an image reference:
// "registry:5000/org/app:1.2@sha256:..." gives "app-" and 8 hex digits.
func nameFromImage(ref string) string {
	ref, _, _ = strings.Cut(ref, "@")
	if i := strings.LastIndexByte(ref, '/'); i >= 0 {
		ref = ref[i+1:]
	}
	ref, _, _ = strings.Cut(ref, ":")
	var b strings.Builder
	for _, r := range strings.ToLower(ref) {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '-' || r == '_' || r == '.' {
			b.WriteRune(r)
		}
	}
	base := strings.TrimLeft(b.String(), "-_.")
	if len(base) > 40 {
		base = base[:40]
	}
	if base == "" {
		base = "agent"
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	return base + "-" + hex.EncodeToString(rnd[:])
}

// ensureHolderImage imports the holder binary as a one-file image, once per
// binary content, and returns its reference. No registry is involved.
func ensureHolderImage(ctx context.Context, c *Client, bin string) (string, error) {
	if bin == "" {
		bin = os.Getenv(EnvHolderBinary)
	}
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", fmt.Errorf("holder binary: %w", err)
		}
		bin = exe
	}
	f, err := os.Open(bin)
	if err != nil {
		return "", fmt.Errorf("holder binary: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("holder binary: %w", err)
	}
	if err := checkStatic(f, bin); err != nil {
		return "", err
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, st.Size())); err != nil {
		return "", fmt.Errorf("holder binary %s: %w", bin, err)
	}
	tag := hex.EncodeToString(h.Sum(nil))[:16]
	ref := HolderImageRepo + ":" + tag
	ok, err := c.ImageExists(ctx, ref)
	if err != nil {
		return "", err
	}
	if ok {
		return ref, nil
	}
	pr, pw := io.Pipe()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		tw := tar.NewWriter(pw)
		err := tw.WriteHeader(&tar.Header{Name: "clawnet", Mode: 0o755, Size: st.Size(), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)})
		if err == nil {
			_, err = io.Copy(tw, io.NewSectionReader(f, 0, st.Size()))
		}
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	id, err := c.ImportImage(ctx, pr)
	pr.CloseWithError(errors.New("import finished"))
	<-wrote
	if err != nil {
		return "", err
	}
	if err := c.TagImage(ctx, id, HolderImageRepo, tag); err != nil {
		return "", err
	}
	pruneHolderImages(ctx, c, ref)
	return ref, nil
}

// pruneHolderImages removes the holder images of earlier clawnet builds, so
// upgrades do not pile them up. One that a running holder uses is refused
// by the engine and stays until a later prune.
func pruneHolderImages(ctx context.Context, c *Client, keep string) {
	for _, repo := range []string{HolderImageRepo, legacyHolderImageRepo} {
		tags, err := c.ImageTags(ctx, repo)
		if err != nil {
			continue
		}
		for _, t := range tags {
			if t != keep {
				_ = c.RemoveImage(ctx, t)
			}
		}
	}
}

// checkStatic refuses a dynamically linked holder binary: the holder image
// holds nothing else, so its loader would be missing.
func checkStatic(r io.ReaderAt, name string) error {
	ef, err := elf.NewFile(r)
	if err != nil {
		return fmt.Errorf("holder binary %s: not an ELF executable: %w", name, err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("holder binary %s is dynamically linked: build it with CGO_ENABLED=0 (or set %s to a static one)", name, EnvHolderBinary)
		}
	}
	return nil
}
