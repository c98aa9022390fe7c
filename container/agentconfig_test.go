package container

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
)

// TestWatcherAgentConfigLabel: a container attached with no policy whose
// io.clawnet.agent-config label names files runs under the policy the
// daemon generates from them; an explicit policy wins; a bad label, or a
// daemon that cannot generate, refuses the attach with a line naming the
// container and the label, and attaches nothing.
func TestWatcherAgentConfigLabel(t *testing.T) {
	f := newFakeEngine(t)
	add := func(id, name, label string) {
		f.add(&fakeContainer{ID: id, Name: name, Pid: 100, StartedAt: "t1", NetworkMode: "none", Networks: []string{"none"},
			ResolvConf: writeResolv(t, "nameserver 100.96.0.1\n"), Labels: map[string]string{LabelAgentConfig: label}})
	}
	add("c1", "claw", "/etc/claw/openclaw.json, /srv/repo/.mcp.json")
	add("c2", "rel", "openclaw.json")
	add("c3", "explicit", "/etc/claw/openclaw.json")
	add("c4", "bad", "/etc/bad/openclaw.json")
	add("c5", "empty", " , ")
	f.add(&fakeContainer{ID: "c6", Name: "plain", Pid: 100, StartedAt: "t1", NetworkMode: "none", Networks: []string{"none"},
		ResolvConf: writeResolv(t, "nameserver 100.96.0.1\n")})
	at := newFakeAttacher()
	var mu sync.Mutex
	var asked []string
	gen := func(_ context.Context, agent string, files []string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, agent+" "+strings.Join(files, ","))
		if agent == "bad" {
			return "", errors.New("/etc/bad/openclaw.json:3: invalid character")
		}
		return "gen-" + agent, nil
	}
	w := NewWatcher(WatcherConfig{Client: f.client(), Attacher: at, ConfigPolicy: gen})
	ctx := context.Background()

	a, err := w.Attach(ctx, "claw", "", "", nil)
	if err != nil || a.Policy != "gen-claw" {
		t.Fatalf("Attach(claw) = %+v, %v; want policy gen-claw", a, err)
	}
	if a, err := w.Attach(ctx, "explicit", "", "coder", nil); err != nil || a.Policy != "coder" {
		t.Errorf("Attach(explicit, --policy coder) = %+v, %v; want coder", a, err)
	}
	if a, err := w.Attach(ctx, "plain", "", "", nil); err != nil || a.Policy != "" {
		t.Errorf("Attach(plain) = %+v, %v; want the default policy", a, err)
	}
	for _, tt := range []struct{ name, want string }{
		{"rel", `container "rel": label io.clawnet.agent-config: "openclaw.json" is not an absolute path on the host`},
		{"empty", `container "empty": label io.clawnet.agent-config: names no file`},
		{"bad", `container "bad": label io.clawnet.agent-config: /etc/bad/openclaw.json:3: invalid character`},
	} {
		if _, err := w.Attach(ctx, tt.name, "", "", nil); err == nil || !strings.HasPrefix(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("Attach(%s) = %v; want one line starting %q", tt.name, err, tt.want)
		}
	}
	want := []string{"claw /etc/claw/openclaw.json,/srv/repo/.mcp.json", "bad /etc/bad/openclaw.json"}
	if strings.Join(asked, "\n") != strings.Join(want, "\n") {
		t.Errorf("ConfigPolicy calls:\n%s\nwant:\n%s", strings.Join(asked, "\n"), strings.Join(want, "\n"))
	}
	calls := strings.Join(at.log(), "\n")
	if !strings.Contains(calls, "attach c1 as claw policy=gen-claw") || strings.Contains(calls, "c2") || strings.Contains(calls, "c4") || strings.Contains(calls, "c5") {
		t.Errorf("attacher calls:\n%s\nwant claw under gen-claw and none of the refused", calls)
	}

	// The engine restarts the container: attached again under the policy
	// generated at its first attach, without generating again.
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	defer func() { cancel(); <-done; f.srv.CloseClientConnections() }()
	waitFor(t, "the event subscription", func() bool { return f.subscribers() == 1 && w.Connected() })
	f.set("c1", func(c *fakeContainer) { c.Pid, c.StartedAt = 200, "t2" })
	f.emit("container", "restart", "c1", nil)
	waitFor(t, "the attach after the restart", func() bool {
		return strings.Contains(strings.Join(at.log(), "\n"), "attach c1 as claw policy=gen-claw pid=200")
	})
	mu.Lock()
	if len(asked) != 2 {
		t.Errorf("ConfigPolicy called again at the restart: %q", asked)
	}
	mu.Unlock()

	// A daemon that does not generate refuses the label rather than run
	// the container under another policy.
	w2 := NewWatcher(WatcherConfig{Client: f.client(), Attacher: newFakeAttacher()})
	f.add(&fakeContainer{ID: "c7", Name: "nogen", Pid: 100, StartedAt: "t1", NetworkMode: "none", Networks: []string{"none"},
		ResolvConf: writeResolv(t, "nameserver 100.96.0.1\n"), Labels: map[string]string{LabelAgentConfig: "/etc/claw/openclaw.json"}})
	if _, err := w2.Attach(ctx, "nogen", "", "", nil); err == nil || !strings.Contains(err.Error(), "does not generate policies") {
		t.Errorf("Attach(nogen) without ConfigPolicy = %v", err)
	}
}
