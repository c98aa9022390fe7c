package container

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestSocketFromEnv(t *testing.T) {
	t.Setenv("DOCKER_HOST", "unix:///run/x/docker.sock")
	if got, err := SocketFromEnv(); err != nil || got != "/run/x/docker.sock" {
		t.Errorf("SocketFromEnv(unix) = %q, %v; want /run/x/docker.sock", got, err)
	}
	t.Setenv("DOCKER_HOST", "tcp://127.0.0.1:2375")
	if _, err := SocketFromEnv(); err == nil || !strings.Contains(err.Error(), "only unix://") {
		t.Errorf("SocketFromEnv(tcp) err = %v; want a unix-only refusal", err)
	}
}

func TestSocketFromEnvPodmanRootless(t *testing.T) {
	if _, err := os.Stat(DockerSocket); err == nil {
		t.Skip("a Docker socket exists and comes first")
	}
	if _, err := os.Stat(PodmanSocket); err == nil {
		t.Skip("a rootful Podman socket exists and comes first")
	}
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "podman"), 0o755)
	p := filepath.Join(dir, "podman", "podman.sock")
	ln, err := net.Listen("unix", p)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("DOCKER_HOST", "")
	t.Setenv("XDG_RUNTIME_DIR", dir)
	if got, err := SocketFromEnv(); err != nil || got != p {
		t.Errorf("SocketFromEnv() = %q, %v; want %q", got, err, p)
	}
}

func TestInspect(t *testing.T) {
	f := newFakeEngine(t)
	f.add(&fakeContainer{ID: "abc123", Name: "agent1", Pid: 42, StartedAt: "t1", NetworkMode: "none",
		Networks: []string{"none"}, Labels: map[string]string{"a": "b"}, ResolvConf: "/x/resolv.conf"})
	f.add(&fakeContainer{ID: "def456", Name: "stopped", Status: "exited", Pid: 7, NetworkMode: "bridge",
		Networks: []string{"zeta", "bridge"}})
	c := f.client()
	ctx := context.Background()

	got, err := c.Inspect(ctx, "agent1")
	want := Info{ID: "abc123", Name: "agent1", Image: "clawnet-test:latest", Running: true, Status: "running",
		Pid: 42, StartedAt: "t1", NetworkMode: "none", Networks: []string{"none"},
		Labels: map[string]string{"a": "b"}, ResolvConfPath: "/x/resolv.conf"}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Errorf("Inspect(agent1) = %+v, %v; want %+v", got, err, want)
	}
	got, err = c.Inspect(ctx, "stopped")
	if err != nil || got.Pid != 0 || got.Running || !reflect.DeepEqual(got.Networks, []string{"bridge", "zeta"}) {
		t.Errorf("Inspect(stopped) = %+v, %v; want not running, pid 0, sorted networks", got, err)
	}
	_, err = c.Inspect(ctx, "foo")
	if err == nil || err.Error() != `container "foo" not found` || !errors.Is(err, ErrNotFound) {
		t.Errorf("Inspect(foo) err = %v; want `container \"foo\" not found` wrapping ErrNotFound", err)
	}
}

func TestInspectEngineGone(t *testing.T) {
	c := NewClient(filepath.Join(t.TempDir(), "nothing.sock"))
	_, err := c.Inspect(context.Background(), "x")
	if err == nil || !strings.Contains(err.Error(), "nothing.sock") {
		t.Errorf("Inspect without engine err = %v; want one naming the socket", err)
	}
}

func TestCheckAttachable(t *testing.T) {
	run := func(mode string, nets ...string) Info {
		return Info{ID: "0123456789abcdef", Name: "foo", Running: true, Status: "running", Pid: 9, NetworkMode: mode, Networks: nets}
	}
	stopped := run("none", "none")
	stopped.Running, stopped.Pid, stopped.Status = false, 0, "exited"
	tests := []struct {
		name string
		info Info
		want string // "" for attachable
		kind error
	}{
		{"none", run("none", "none"), "", nil},
		{"podman none", run("none"), "", nil},
		{"bridge", run("bridge", "bridge"), `container "foo" uses network "bridge": run it with --network none (or use clawnet run)`, ErrOtherNetwork},
		{"default", run("default", "bridge"), `container "foo" uses network "bridge": run it with --network none (or use clawnet run)`, ErrOtherNetwork},
		{"user network", run("backend", "backend"), `container "foo" uses network "backend": run it with --network none (or use clawnet run)`, ErrOtherNetwork},
		{"host", run("host", "host"), `container "foo" uses the host network: run it with --network none (or use clawnet run)`, ErrOtherNetwork},
		{"joins another", run("container:0123abcd"), `container "foo" shares the network of container "0123abcd": attach that container instead`, ErrOtherNetwork},
		{"connected later", run("none", "none", "bridge"), `container "foo" uses network "bridge": run it with --network none (or use clawnet run)`, ErrOtherNetwork},
		{"slirp", run("slirp4netns"), `container "foo" uses network "slirp4netns": run it with --network none (or use clawnet run)`, ErrOtherNetwork},
		{"stopped", stopped, `container "foo" is not running (status exited): start it first`, ErrNotRunning},
	}
	for _, tt := range tests {
		err := CheckAttachable(tt.info)
		if tt.want == "" {
			if err != nil {
				t.Errorf("CheckAttachable(%s) = %v; want nil", tt.name, err)
			}
			continue
		}
		if err == nil || err.Error() != tt.want || !errors.Is(err, tt.kind) {
			t.Errorf("CheckAttachable(%s) = %v; want %q (%v)", tt.name, err, tt.want, tt.kind)
		}
		if err != nil && strings.Contains(err.Error(), "\n") {
			t.Errorf("CheckAttachable(%s) error spans lines: %q", tt.name, err)
		}
	}
}

func TestEvents(t *testing.T) {
	f := newFakeEngine(t)
	c := f.client()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := c.Events(ctx) // no filter: the fake sends every event
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	f.emit("container", "start", "c1", map[string]string{"name": "a"})
	f.emit("container", "health_status: healthy", "c1", nil)
	f.emit("network", "connect", "netid", map[string]string{"container": "c2", "name": "bridge"})
	f.emit("network", "create", "netid", nil) // no container: skipped
	f.emit("container", "die", "c1", map[string]string{"exitCode": "0"})
	want := []Event{
		{Type: "container", Action: "start", ID: "c1", Attributes: map[string]string{"name": "a"}},
		{Type: "container", Action: "health_status", ID: "c1"},
		{Type: "network", Action: "connect", ID: "c2", Attributes: map[string]string{"container": "c2", "name": "bridge"}},
		{Type: "container", Action: "die", ID: "c1", Attributes: map[string]string{"exitCode": "0"}},
	}
	for i, w := range want {
		ev, err := s.Next()
		ev.TimeNano = 0
		if err != nil || !reflect.DeepEqual(ev, w) {
			t.Errorf("Next() #%d = %+v, %v; want %+v", i, ev, err, w)
		}
	}
	f.dropSubscribers()
	if _, err := s.Next(); err == nil {
		t.Error("Next() after the engine closed the stream = nil error; want one")
	}
}

func TestEventsCancel(t *testing.T) {
	f := newFakeEngine(t)
	c := f.client()
	ctx, cancel := context.WithCancel(context.Background())
	s, err := c.Events(ctx)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := s.Next(); done <- err }()
	cancel()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Next() after cancel = nil error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next() did not return after its context was cancelled")
	}
	s.Close()
}

func TestImportImage(t *testing.T) {
	for _, podman := range []bool{false, true} {
		f := newFakeEngine(t)
		f.podman = podman
		c := f.client()
		ctx := context.Background()
		id, err := c.ImportImage(ctx, strings.NewReader("x"))
		if err != nil || !strings.HasPrefix(id, "sha256:") {
			t.Fatalf("ImportImage (podman %v) = %q, %v; want the image's ID", podman, id, err)
		}
		if err := c.TagImage(ctx, id, HolderImageRepo, "t1"); err != nil {
			t.Fatalf("TagImage = %v", err)
		}
		if ok, err := c.ImageExists(ctx, HolderImageRepo+":t1"); !ok || err != nil {
			t.Errorf("ImageExists(imported) = %v, %v; want true", ok, err)
		}
		if ok, err := c.ImageExists(ctx, "nope:1"); ok || err != nil {
			t.Errorf("ImageExists(nope) = %v, %v; want false, nil", ok, err)
		}
		if err := c.TagImage(ctx, "sha256:0", HolderImageRepo, "t2"); !errors.Is(err, ErrNotFound) {
			t.Errorf("TagImage(unknown) = %v; want not found", err)
		}
		_, err = c.ImportImage(ctx, strings.NewReader(""))
		if err == nil || !strings.Contains(err.Error(), "empty archive") {
			t.Errorf("ImportImage(empty) = %v; want the engine's streamed error", err)
		}
	}
}

// TestJSONMessages: the import's answer names the image's ID as Docker's
// status or Podman's id; an error in the stream wins.
func TestJSONMessages(t *testing.T) {
	for _, tc := range []struct{ in, id, err string }{
		{`{"status":"sha256:aa"}` + "\r\n", "sha256:aa", ""},
		{`{"status":"sha256:bb","progress":"","progressDetail":{},"id":"sha256:bb"}` + "\n", "sha256:bb", ""},
		{`{"status":"importing"}` + "\n" + `{"id":"sha256:cc"}`, "sha256:cc", ""},
		{`{"status":"importing"}` + "\n" + `{"errorDetail":{"message":"no space"}}`, "", "no space"},
		{`garbage` + "\n" + `{"error":"bad tar"}`, "", "bad tar"},
		{`{"status":"done"}`, "", ""},
	} {
		id, err := jsonMessages(strings.NewReader(tc.in))
		if id != tc.id || (err == nil) != (tc.err == "") || (err != nil && err.Error() != tc.err) {
			t.Errorf("jsonMessages(%q) = %q, %v; want %q, %q", tc.in, id, err, tc.id, tc.err)
		}
	}
}

func TestEngine(t *testing.T) {
	for _, podman := range []bool{false, true} {
		f := newFakeEngine(t)
		f.podman = podman
		got, err := f.client().Engine(context.Background())
		want := EngineInfo{Name: EngineDocker, Version: "20.10.24"}
		if podman {
			want = EngineInfo{Name: EnginePodman, Version: "4.3.1"}
		}
		if err != nil || got != want {
			t.Errorf("Engine() = %+v, %v; want %+v", got, err, want)
		}
	}
}

func TestRemoveContainerGoneIsFine(t *testing.T) {
	f := newFakeEngine(t)
	c := f.client()
	if err := c.RemoveContainer(context.Background(), "ghost", true); err != nil {
		t.Errorf("RemoveContainer(ghost) = %v; want nil", err)
	}
}

func TestListContainersByLabel(t *testing.T) {
	f := newFakeEngine(t)
	f.add(&fakeContainer{ID: "h1", Name: "clawnet-holder-a", Labels: map[string]string{LabelRole: "holder"}})
	f.add(&fakeContainer{ID: "a1", Name: "a", Labels: map[string]string{LabelRole: "agent", LabelHolder: "h1"}})
	f.add(&fakeContainer{ID: "x", Name: "other"})
	got, err := f.client().ListContainers(context.Background(), LabelRole, "holder")
	if err != nil || len(got) != 1 || got[0].ID != "h1" {
		t.Errorf("ListContainers(role=holder) = %+v, %v; want just h1", got, err)
	}
}
