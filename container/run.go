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
	"os"
	"os/exec"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
	"time"
)

// HolderImageRepo is the local image the holders run: one static binary,
// imported from the host, never pulled.
const HolderImageRepo = "clawnet-holder"

// LabelPublish is on a holder attached with published ports: they are
// listed, comma-separated, in their RunOptions.Publish form, so that the
// engine keeps the record along with the agent's name and policy.
const LabelPublish = "io.clawnet.publish"

// EnvHolderBinary overrides the holder's binary (see RunOptions).
const EnvHolderBinary = "CLAWNET_HOLDER_BINARY"

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
	// DockerArgs are docker run options, passed through to the agent's
	// container except the network ones (see README.md).
	DockerArgs []string
	Image      string
	Cmd        []string

	Stdin          io.Reader
	Stdout, Stderr io.Writer

	// Client talks to the engine. Nil: NewClientFromEnv.
	Client *Client
	// DockerCLI runs the agent's container. Empty: "docker" from PATH.
	DockerCLI string
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

// AttachFunc attaches a container through the daemon's control API. Run
// calls it once, with the holder, before the agent's container exists.
type AttachFunc func(ctx context.Context, req AttachRequest) error

// Run implements `clawnet run`. It starts a holder container with
// --network none running a pause process, attaches the holder's namespace
// through attach, and only then runs the agent's container with
// --network container:HOLDER through the docker CLI (the only faithful way
// to honour arbitrary docker run options, -it and -d included). The
// agent's first instruction therefore already has the gateway and nothing
// else. It returns docker run's exit status. The holder is removed here
// when the agent's container is gone by the time docker run returns (--rm,
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
			DNS:         hopts.dns,
			DNSSearch:   hopts.dnsSearch,
			DNSOptions:  hopts.dnsOptions,
			ExtraHosts:  hopts.extraHosts,
			// The pause process needs no privilege at all.
			CapDrop:     []string{"ALL"},
			SecurityOpt: []string{"no-new-privileges"},
			Init:        &noInit,
		},
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
	}()
	if err := c.StartContainer(ctx, holderID); err != nil {
		return 0, fmt.Errorf("clawnet run: holder: %w", err)
	}
	if err := attach(ctx, AttachRequest{Container: holderID, Name: name, Policy: o.Policy, Publish: o.Publish}); err != nil {
		return 0, fmt.Errorf("clawnet run: attach: %w", err)
	}

	argv := []string{"run", "--network", "container:" + holderID, "--name", name,
		"--label", LabelRole + "=agent", "--label", LabelAgent + "=" + name,
		"--label", LabelHolder + "=" + holderID}
	argv = append(argv, agentArgs...)
	argv = append(argv, o.Image)
	argv = append(argv, o.Cmd...)
	cli := o.DockerCLI
	if cli == "" {
		cli = "docker"
	}
	cmd := exec.Command(cli, argv...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.Stdin, o.Stdout, o.Stderr
	// The CLI must reach the engine the holder was created on.
	cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+c.Socket())
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
	err = c.ImportImage(ctx, pr, HolderImageRepo, tag)
	pr.CloseWithError(errors.New("import finished"))
	<-wrote
	if err != nil {
		return "", err
	}
	pruneHolderImages(ctx, c, ref)
	return ref, nil
}

// pruneHolderImages removes the holder images of earlier clawnet builds, so
// upgrades do not pile them up. One that a running holder uses is refused
// by the engine and stays until a later prune.
func pruneHolderImages(ctx context.Context, c *Client, keep string) {
	tags, err := c.ImageTags(ctx, HolderImageRepo)
	if err != nil {
		return
	}
	for _, t := range tags {
		if t != keep {
			_ = c.RemoveImage(ctx, t)
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
