package container

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func TestParseRunArgs(t *testing.T) {
	tests := []struct {
		args []string
		want RunOptions
		err  string
	}{
		{[]string{"--", "img"}, RunOptions{Image: "img", Cmd: []string{}}, ""},
		{[]string{"--name", "a1", "--policy=coder", "--rm", "-it", "-e", "X=--network", "--", "img", "sh", "-c", "echo --"},
			RunOptions{Name: "a1", Policy: "coder", DockerArgs: []string{"--rm", "-i", "-t", "-e", "X=--network"}, Image: "img", Cmd: []string{"sh", "-c", "echo --"}}, ""},
		{[]string{"-eFOO=1", "-v", "/a:/b", "--name=x", "--", "img"},
			RunOptions{Name: "x", DockerArgs: []string{"-eFOO=1", "-v", "/a:/b"}, Image: "img", Cmd: []string{}}, ""},
		// -p is clawnet's: taken out of the docker options in every form.
		{[]string{"-p", "8080:80", "-p=9000:9000/udp", "--publish", "127.0.0.1:1:2", "--publish=3:4", "-dp5:6", "--rm", "-p7:8", "--", "img", "-p", "9:9"},
			RunOptions{Publish: []string{"8080:80", "9000:9000/udp", "127.0.0.1:1:2", "3:4", "5:6", "7:8"}, DockerArgs: []string{"-d", "--rm"}, Image: "img", Cmd: []string{"-p", "9:9"}}, ""},
		// --agent-config (repeated) and --policy-dir are clawnet's too.
		{[]string{"--agent-config", "a.json", "--rm", "--agent-config=-b.json", "--policy-dir", "/p", "--", "img"},
			RunOptions{AgentConfig: []string{"a.json", "-b.json"}, PolicyDir: "/p", DockerArgs: []string{"--rm"}, Image: "img", Cmd: []string{}}, ""},
		{[]string{"--agent-config", "--", "img"}, RunOptions{}, "option --agent-config needs a value"},
		{[]string{"--rm", "-p", "--", "img"}, RunOptions{}, "option -p needs a value"},
		{[]string{"--publish", "--", "img"}, RunOptions{}, "option --publish needs a value"},
		{[]string{"-P", "--", "img"}, RunOptions{DockerArgs: []string{"-P"}, Image: "img", Cmd: []string{}}, ""},
		{[]string{"--engine-cli", "podman", "--rm", "--engine-cli=/opt/podman", "--", "img"},
			RunOptions{EngineCLI: "/opt/podman", DockerArgs: []string{"--rm"}, Image: "img", Cmd: []string{}}, ""},
		{[]string{"img"}, RunOptions{}, `missing "--"`},
		{[]string{"--rm", "--"}, RunOptions{}, "missing image"},
		{[]string{"--name"}, RunOptions{}, `missing "--"`},
		{[]string{"--name", "--", "img"}, RunOptions{}, "needs a value"},
		{[]string{"stray", "--", "img"}, RunOptions{}, `unexpected "stray"`},
		{[]string{"-Z", "--", "img"}, RunOptions{}, "unknown docker run option -Z"},
	}
	for _, tt := range tests {
		got, err := ParseRunArgs(tt.args)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("ParseRunArgs(%q) err = %v; want one containing %q", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseRunArgs(%q) = %+v, %v; want %+v", tt.args, got, err, tt.want)
		}
	}
}

func TestSplitRunArgs(t *testing.T) {
	h, agent, err := splitRunArgs([]string{"--rm", "-h", "box", "--dns", "127.0.0.1", "--dns-search=corp.test",
		"--dns-option", "ndots:1", "--add-host", "db:198.18.0.9", "-e", "A=1", "--read-only", "--cpus", "1", "--domainname", "x.test"})
	wantH := holderOpts{hostname: "box", dns: []string{"127.0.0.1"}, dnsSearch: []string{"corp.test"},
		dnsOptions: []string{"ndots:1"}, extraHosts: []string{"db:198.18.0.9"}}
	wantA := []string{"--rm", "-e", "A=1", "--read-only", "--cpus", "1", "--domainname", "x.test"}
	if err != nil || !reflect.DeepEqual(h, wantH) || !reflect.DeepEqual(agent, wantA) {
		t.Errorf("splitRunArgs = %+v, %q, %v; want %+v, %q", h, agent, err, wantH, wantA)
	}
	for _, bad := range [][]string{
		{"--network", "host"}, {"--net=bridge"}, {"-P"}, {"--publish-all"},
		{"--expose", "80"}, {"--ip", "10.0.0.2"}, {"--mac-address", "02:00:00:00:00:01"}, {"--link", "db"},
		{"-dit", "--network", "none"},
	} {
		_, _, err := splitRunArgs(bad)
		if err == nil || !errors.Is(err, errNetworkOpt) || strings.Contains(err.Error(), "\n") {
			t.Errorf("splitRunArgs(%q) err = %v; want a one-line network refusal", bad, err)
		}
	}
}

// TestSplitRunArgsClawnetOptions: clawnet's own options reaching the
// docker options (RunOptions built by hand) are refused, never passed on.
func TestSplitRunArgsClawnetOptions(t *testing.T) {
	for _, bad := range [][]string{{"-p", "80:80"}, {"--publish=80:80"}, {"-dp", "80:80"}, {"--name", "x"}, {"--policy=p"}, {"--engine-cli", "x"}} {
		_, _, err := splitRunArgs(bad)
		if err == nil || !strings.Contains(err.Error(), "to clawnet run (RunOptions), not among the docker options") {
			t.Errorf("splitRunArgs(%q) err = %v; want a refusal pointing at RunOptions", bad, err)
		}
	}
}

func TestNameFromImage(t *testing.T) {
	re := regexp.MustCompile(`^([a-z0-9][a-z0-9_.-]*)-[0-9a-f]{8}$`)
	for ref, base := range map[string]string{
		"clawnet-test:latest":                     "clawnet-test",
		"registry:5000/org/App:1.2@sha256:abcdef": "app",
		"__weird__": "weird__",
		"/:":        "agent",
	} {
		got := nameFromImage(ref)
		m := re.FindStringSubmatch(got)
		if m == nil || m[1] != base || !validName.MatchString(got) {
			t.Errorf("nameFromImage(%q) = %q; want %q-XXXXXXXX", ref, got, base)
		}
	}
}

// miniELF writes the smallest ELF64 file debug/elf accepts, with a PT_INTERP
// program header when dynamic.
func miniELF(t *testing.T, dynamic bool) string {
	t.Helper()
	var b bytes.Buffer
	le := binary.LittleEndian
	ident := []byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	b.Write(ident)
	binary.Write(&b, le, uint16(2))  // ET_EXEC
	binary.Write(&b, le, uint16(62)) // EM_X86_64
	binary.Write(&b, le, uint32(1))  // version
	binary.Write(&b, le, uint64(0))  // entry
	binary.Write(&b, le, uint64(64)) // phoff
	binary.Write(&b, le, uint64(0))  // shoff
	binary.Write(&b, le, uint32(0))  // flags
	binary.Write(&b, le, uint16(64)) // ehsize
	binary.Write(&b, le, uint16(56)) // phentsize
	binary.Write(&b, le, uint16(1))  // phnum
	binary.Write(&b, le, uint16(64)) // shentsize
	binary.Write(&b, le, uint16(0))  // shnum
	binary.Write(&b, le, uint16(0))  // shstrndx
	typ := uint32(1)                 // PT_LOAD
	if dynamic {
		typ = 3 // PT_INTERP
	}
	binary.Write(&b, le, typ)
	binary.Write(&b, le, uint32(5))
	for range 6 {
		binary.Write(&b, le, uint64(0))
	}
	p := filepath.Join(t.TempDir(), "bin")
	if err := os.WriteFile(p, b.Bytes(), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeDockerCLI is a shell script standing in for the docker CLI: it
// records its arguments and exits with the given status.
func fakeDockerCLI(t *testing.T, exit string) (cli, argsFile string) {
	t.Helper()
	dir := t.TempDir()
	argsFile = filepath.Join(dir, "args")
	cli = filepath.Join(dir, "docker")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" > " + argsFile + "\necho from-agent\nexit " + exit + "\n"
	if err := os.WriteFile(cli, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return cli, argsFile
}

func TestRunHolderThenAgent(t *testing.T) {
	f := newFakeEngine(t)
	c := f.client()
	cli, argsFile := fakeDockerCLI(t, "3")
	var attached []AttachRequest
	attach := func(_ context.Context, r AttachRequest) (AttachResult, error) {
		// At attach time the agent's container must not have run yet.
		if _, err := os.Stat(argsFile); err == nil && len(attached) == 0 {
			t.Error("docker run ran before the holder was attached")
		}
		attached = append(attached, r)
		return AttachResult{}, nil
	}
	var out bytes.Buffer
	code, err := Run(context.Background(), RunOptions{
		Name: "agent1", Policy: "coder", Image: "clawnet-test:latest", Cmd: []string{"wget", "x"},
		DockerArgs: []string{"--rm", "--dns", "127.0.0.1", "-e", "A=1"},
		Publish:    []string{"127.0.0.1:8080:80/tcp", "[::1]:5353:53/udp"},
		Stdout:     &out, Client: c, EngineCLI: cli, HolderBinary: miniELF(t, false),
	}, attach)
	if err != nil || code != 3 {
		t.Fatalf("Run = %d, %v; want 3 (docker's status), nil", code, err)
	}
	if out.String() != "from-agent\n" {
		t.Errorf("stdout = %q; want the CLI's output passed through", out.String())
	}
	f.mu.Lock()
	created, imported, tagged, removed := f.created, f.imported, f.tagged, f.removed
	f.mu.Unlock()
	if len(created) != 1 {
		t.Fatalf("created = %+v; want one holder", created)
	}
	h := created[0]
	if len(imported) != 1 || len(tagged) != 1 || !strings.HasPrefix(tagged[0], HolderImageRepo+":") || h.Image != tagged[0] {
		t.Errorf("imported %v, tagged %v, holder image %q; want one image, named %s:TAG and run by that name", imported, tagged, h.Image, HolderImageRepo)
	}
	if h.HostConfig.NetworkMode != "none" || !reflect.DeepEqual(h.HostConfig.DNS, []string{"127.0.0.1"}) ||
		h.Labels[LabelRole] != "holder" || !reflect.DeepEqual(h.Entrypoint, []string{"/clawnet"}) ||
		!reflect.DeepEqual(h.Cmd, []string{"pause"}) || !reflect.DeepEqual(h.HostConfig.CapDrop, []string{"ALL"}) {
		t.Errorf("holder spec = %+v; want --network none, the --dns moved to it, /clawnet pause, no caps", h)
	}
	if len(attached) != 1 || attached[0].Name != "agent1" || attached[0].Policy != "coder" || len(attached[0].Container) != 64 ||
		!reflect.DeepEqual(attached[0].Publish, []string{"127.0.0.1:8080:80/tcp", "[::1]:5353:53/udp"}) {
		t.Errorf("attached = %+v; want the holder's ID as agent1/coder, with the published ports", attached)
	}
	if got := h.Labels[LabelPublish]; got != "127.0.0.1:8080:80/tcp,[::1]:5353:53/udp" {
		t.Errorf("holder label %s = %q; want the published ports", LabelPublish, got)
	}
	// The published ports are nowhere in docker's argv: the engine never
	// sees them.
	argv, _ := os.ReadFile(argsFile)
	want := "run\n--network\ncontainer:" + attached[0].Container + "\n--name\nagent1\n--label\nio.clawnet.role=agent\n" +
		"--label\nio.clawnet.agent=agent1\n--label\nio.clawnet.holder=" + attached[0].Container + "\n" +
		"--rm\n-e\nA=1\nclawnet-test:latest\nwget\nx\n"
	if string(argv) != want {
		t.Errorf("docker argv:\n%s\nwant:\n%s", argv, want)
	}
	// The fake CLI created no agent container (as with --rm, it is gone):
	// the holder must be removed.
	if len(removed) != 1 || removed[0] != attached[0].Container {
		t.Errorf("removed = %v; want the holder", removed)
	}

	// Same binary again: no second import.
	if _, err := Run(context.Background(), RunOptions{Name: "agent2", Image: "i", Client: c, EngineCLI: cli,
		HolderBinary: miniELF(t, false)}, attach); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	n := len(f.imported)
	_, labelled := f.created[len(f.created)-1].Labels[LabelPublish]
	f.mu.Unlock()
	if n != 1 {
		t.Errorf("imports after a second run = %d; want 1", n)
	}
	if labelled || len(attached) != 2 || attached[1].Publish != nil {
		t.Errorf("a run with no -p: holder labelled %v, attached %+v; want no ports", labelled, attached[1:])
	}
}

func TestRunKeepsHolderWhileAgentExists(t *testing.T) {
	f := newFakeEngine(t)
	c := f.client()
	cli, _ := fakeDockerCLI(t, "0")
	// As after `docker run -d`: the agent container exists when the CLI returns.
	f.add(&fakeContainer{ID: "a1", Name: "placeholder"})
	attach := func(_ context.Context, r AttachRequest) (AttachResult, error) {
		f.set("a1", func(c *fakeContainer) { c.Name = r.Name })
		return AttachResult{}, nil
	}
	code, err := Run(context.Background(), RunOptions{Name: "bg", Image: "i", DockerArgs: []string{"-d"},
		Client: c, EngineCLI: cli, HolderBinary: miniELF(t, false)}, attach)
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.removed) != 0 {
		t.Errorf("removed = %v; want the holder kept while its agent container exists", f.removed)
	}
}

func TestRunFailuresCleanUp(t *testing.T) {
	t.Setenv(EnvHolderBinary, "")
	f := newFakeEngine(t)
	c := f.client()
	cli, argsFile := fakeDockerCLI(t, "0")
	ok := func(context.Context, AttachRequest) (AttachResult, error) { return AttachResult{}, nil }
	f.add(&fakeContainer{ID: "taken", Name: "taken"})

	if _, err := Run(context.Background(), RunOptions{Name: "taken", Image: "i", Client: c, EngineCLI: cli,
		HolderBinary: miniELF(t, false)}, ok); err == nil || !strings.Contains(err.Error(), "already in use") {
		t.Errorf("Run(name in use) = %v; want already in use", err)
	}
	if _, err := Run(context.Background(), RunOptions{Name: "d", Image: "i", Client: c, EngineCLI: cli,
		HolderBinary: miniELF(t, true)}, ok); err == nil || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("Run(dynamic holder) = %v; want a static-build hint", err)
	}
	if _, err := Run(context.Background(), RunOptions{Name: "n", Image: "i", DockerArgs: []string{"--network", "host"},
		Client: c, EngineCLI: cli, HolderBinary: miniELF(t, false)}, ok); err == nil || !errors.Is(err, errNetworkOpt) {
		t.Errorf("Run(--network host) = %v; want a refusal", err)
	}
	if _, err := Run(context.Background(), RunOptions{Name: "bad name!", Image: "i", Client: c, EngineCLI: cli}, ok); err == nil {
		t.Error("Run(invalid name) = nil error")
	}
	failing := func(context.Context, AttachRequest) (AttachResult, error) {
		return AttachResult{}, errors.New("policy \"nope\" not found")
	}
	_, err := Run(context.Background(), RunOptions{Name: "f", Policy: "nope", Image: "i", Client: c, EngineCLI: cli,
		HolderBinary: miniELF(t, false)}, failing)
	if err == nil || !strings.Contains(err.Error(), `policy "nope" not found`) {
		t.Errorf("Run(attach fails) = %v; want the daemon's error", err)
	}
	if _, err := os.Stat(argsFile); err == nil {
		t.Error("docker run ran although the attach failed")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.removed) != 1 {
		t.Errorf("removed = %v; want the one holder whose attach failed", f.removed)
	}
	for _, ct := range f.containers {
		if ct.Labels[LabelRole] == "holder" {
			t.Errorf("holder %s left behind", ct.Name)
		}
	}
}

func TestRunPrunesOldHolderImages(t *testing.T) {
	f := newFakeEngine(t)
	c := f.client()
	cli, _ := fakeDockerCLI(t, "0")
	f.mu.Lock()
	f.images[HolderImageRepo+":old-unused"] = true
	f.images[HolderImageRepo+":old-in-use"] = true
	f.images["clawnet-holder:older"] = true // what earlier clawnets called it
	f.images["other:1"] = true
	f.mu.Unlock()
	f.add(&fakeContainer{ID: "h0", Name: "clawnet-holder-x", Image: HolderImageRepo + ":old-in-use"})
	if _, err := Run(context.Background(), RunOptions{Name: "p", Image: "i", Client: c, EngineCLI: cli,
		HolderBinary: miniELF(t, false)}, func(context.Context, AttachRequest) (AttachResult, error) { return AttachResult{}, nil }); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.images[HolderImageRepo+":old-unused"] || f.images["clawnet-holder:older"] || !f.images[HolderImageRepo+":old-in-use"] ||
		!f.images["other:1"] || len(f.tagged) != 1 || !f.images[f.tagged[0]] {
		t.Errorf("images after Run = %v; want the unused old holder image gone, the rest kept", f.images)
	}
}

func TestRunHolderBinaryFromEnv(t *testing.T) {
	f := newFakeEngine(t)
	cli, _ := fakeDockerCLI(t, "0")
	// The test binary itself may be dynamic; the env's static one wins.
	t.Setenv(EnvHolderBinary, miniELF(t, false))
	if _, err := Run(context.Background(), RunOptions{Name: "e", Image: "i", Client: f.client(), EngineCLI: cli},
		func(context.Context, AttachRequest) (AttachResult, error) { return AttachResult{}, nil }); err != nil {
		t.Errorf("Run with %s = %v", EnvHolderBinary, err)
	}
	t.Setenv(EnvHolderBinary, miniELF(t, true))
	_, err := Run(context.Background(), RunOptions{Name: "e2", Image: "i", Client: f.client(), EngineCLI: cli},
		func(context.Context, AttachRequest) (AttachResult, error) { return AttachResult{}, nil })
	if err == nil || !strings.Contains(err.Error(), EnvHolderBinary) {
		t.Errorf("Run with a dynamic %s = %v; want the static hint naming it", EnvHolderBinary, err)
	}
}

// TestRunPodman: on Podman the holder gets no DNS options (Podman makes no
// resolv.conf for a container without network), and the agent's container
// mounts, read-only, a file naming the gateway the attach reported, with
// the run's search and options; the file goes with the holder. The CLI is
// pointed at the engine's socket.
func TestRunPodman(t *testing.T) {
	f := newFakeEngine(t)
	f.podman = true
	holderRunDir = t.TempDir()
	t.Cleanup(func() { holderRunDir = HolderRunDir })
	dir := t.TempDir()
	cli := filepath.Join(dir, "podman")
	script := `#!/bin/sh
printf '%s\n' "$@" > ` + dir + `/args
echo "$CONTAINER_HOST $DOCKER_HOST" > ` + dir + `/env
for a in "$@"; do case "$a" in *:/etc/resolv.conf:ro) cp "${a%%:*}" ` + dir + `/resolv;; esac; done
`
	if err := os.WriteFile(cli, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	var holder string
	attach := func(_ context.Context, r AttachRequest) (AttachResult, error) {
		holder = r.Container
		return AttachResult{DNS: netip.MustParseAddr("100.96.9.1")}, nil
	}
	code, err := Run(context.Background(), RunOptions{Name: "pm", Image: "img",
		DockerArgs: []string{"--rm", "--dns", "127.0.0.1", "--dns-search", "corp.test", "--dns-option", "ndots:1", "--add-host", "db:198.18.0.9"},
		Client:     f.client(), EngineCLI: cli, HolderBinary: miniELF(t, false)}, attach)
	if err != nil || code != 0 {
		t.Fatalf("Run = %d, %v", code, err)
	}
	f.mu.Lock()
	h := f.created[0]
	f.mu.Unlock()
	if h.HostConfig.DNS != nil || h.HostConfig.DNSSearch != nil || h.HostConfig.DNSOptions != nil ||
		!reflect.DeepEqual(h.HostConfig.ExtraHosts, []string{"db:198.18.0.9"}) {
		t.Errorf("holder HostConfig = %+v; want no DNS options, the extra host kept", h.HostConfig)
	}
	file := filepath.Join(holderRunDir, holder+".resolv.conf")
	argv, _ := os.ReadFile(filepath.Join(dir, "args"))
	want := "run\n--network\ncontainer:" + holder + "\n--name\npm\n--label\nio.clawnet.role=agent\n" +
		"--label\nio.clawnet.agent=pm\n--label\nio.clawnet.holder=" + holder + "\n" +
		"--volume\n" + file + ":/etc/resolv.conf:ro\n--rm\nimg\n"
	if string(argv) != want {
		t.Errorf("podman argv:\n%s\nwant:\n%s", argv, want)
	}
	rc, _ := os.ReadFile(filepath.Join(dir, "resolv"))
	wantRC := "# clawnet: nameserver 127.0.0.1 (unreachable through the gateway)\nsearch corp.test\noptions ndots:1\nnameserver 100.96.9.1 # clawnet gateway\n"
	if string(rc) != wantRC {
		t.Errorf("agent's resolv.conf = %q; want %q", rc, wantRC)
	}
	env, _ := os.ReadFile(filepath.Join(dir, "env"))
	if s := "unix://" + f.socket; string(env) != s+" "+s+"\n" {
		t.Errorf("CLI env CONTAINER_HOST DOCKER_HOST = %q; want both %s", env, s)
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Errorf("agent's resolv.conf still there after its holder was removed: %v", err)
	}

	// A resolv.conf of the user's own is left alone.
	os.Remove(filepath.Join(dir, "args"))
	if _, err := Run(context.Background(), RunOptions{Name: "pm2", Image: "img", DockerArgs: []string{"-v", "/x:/etc/resolv.conf:ro"},
		Client: f.client(), EngineCLI: cli, HolderBinary: miniELF(t, false)}, attach); err != nil {
		t.Fatal(err)
	}
	argv, _ = os.ReadFile(filepath.Join(dir, "args"))
	if strings.Count(string(argv), "/etc/resolv.conf") != 1 || !strings.Contains(string(argv), "-v\n/x:/etc/resolv.conf:ro\n") {
		t.Errorf("podman argv with the user's own resolv.conf:\n%s\nwant only theirs", argv)
	}
}

func TestEngineCLI(t *testing.T) {
	docker, podman := EngineInfo{Name: EngineDocker}, EngineInfo{Name: EnginePodman}
	t.Setenv(EnvEngineCLI, "")
	if got := engineCLI("", docker); got != "docker" {
		t.Errorf("engineCLI(docker) = %q", got)
	}
	if got := engineCLI("", podman); got != "podman" {
		t.Errorf("engineCLI(podman) = %q", got)
	}
	t.Setenv(EnvEngineCLI, "/opt/bin/podman-remote")
	if got := engineCLI("", docker); got != "/opt/bin/podman-remote" {
		t.Errorf("engineCLI with %s = %q", EnvEngineCLI, got)
	}
	if got := engineCLI("nerdctl", podman); got != "nerdctl" {
		t.Errorf("engineCLI(--engine-cli nerdctl) = %q", got)
	}
}

func TestMountsResolvConf(t *testing.T) {
	for args, want := range map[string]bool{
		"-v /a:/etc/resolv.conf":                                   true,
		"--volume=/a:/etc/resolv.conf:ro,Z":                        true,
		"--mount type=bind,src=/a,dst=/etc/resolv.conf,readonly":   true,
		"--mount=type=bind,source=/a,target=/etc/resolv.conf":      true,
		"-v /etc/resolv.conf:/x":                                   false,
		"--mount type=bind,src=/etc/resolv.conf,dst=/etc/resolv.d": false,
		"-e X=/a:/etc/resolv.conf":                                 false,
	} {
		h, _, err := splitRunArgs(strings.Fields(args))
		if err != nil || h.ownResolvConf != want {
			t.Errorf("splitRunArgs(%s).ownResolvConf = %v, %v; want %v", args, h.ownResolvConf, err, want)
		}
	}
}
