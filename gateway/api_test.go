package gateway

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/clawnet/clawnet/gateway/control"
	"github.com/clawnet/clawnet/tun"
)

const apiTestPolicy = "version: v1\nname: coder\negress:\n  - domains: [api.github.com]\n    ports: [443]\n"

// apiGateway is a gateway built as clawnetd builds it, on a policy
// directory of its own and with fakes for the container engine. Nothing in
// it needs root until an attach gets past its checks.
func apiGateway(t *testing.T, opts Options) (*Gateway, string) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "coder.yaml"), []byte(apiTestPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.PolicyDir = dir
	cfg.DNS.Upstream = Upstream{Servers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}}
	opts.Config = cfg
	g, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Close)
	return g, dir
}

// fakeResolver answers every container with the same process.
type fakeResolver struct {
	id, name string
	pid      int
	err      error
}

func (r fakeResolver) Resolve(context.Context, string) (string, string, int, []string, error) {
	return r.id, r.name, r.pid, nil, r.err
}

// fakeFollower records what the gateway asks of it.
type fakeFollower struct {
	agent   string // the agent name Follow answers
	err     error
	follows []string // nameOrID/agent/policy of each Follow
	forgot  string   // the last container Forget was given
}

func (f *fakeFollower) Follow(_ context.Context, nameOrID, agent, policy string, publish []string) (string, error) {
	f.follows = append(f.follows, nameOrID+"/"+agent+"/"+policy+"/"+strings.Join(publish, ","))
	return f.agent, f.err
}

func (f *fakeFollower) Forget(containerID string) { f.forgot = containerID }

// call sends one request to g's control API and returns the status and
// the body.
func call(t *testing.T, g *Gateway, method, path, body string) (int, string) {
	t.Helper()
	w := httptest.NewRecorder()
	g.Handler().ServeHTTP(w, httptest.NewRequest(method, path, strings.NewReader(body)))
	return w.Code, w.Body.String()
}

// wantError checks a refusal: its status, and a control.Error of one line
// that contains want.
func wantError(t *testing.T, what string, code int, body string, wantCode int, want string) {
	t.Helper()
	var e control.Error
	if err := json.Unmarshal([]byte(body), &e); err != nil {
		t.Errorf("%s: body %q is not a control.Error: %v", what, body, err)
	}
	if code != wantCode || !strings.Contains(e.Error, want) || strings.Contains(e.Error, "\n") {
		t.Errorf("%s = %d %q, want %d and one line containing %q", what, code, e.Error, wantCode, want)
	}
}

// otherNetnsPID starts a process in a network namespace of its own (in a
// user namespace of its own when not root), so that an attach gets past
// the host-namespace check without a TUN ever being made.
func otherNetnsPID(t *testing.T) int {
	t.Helper()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary for a process in another namespace")
	}
	cmd := exec.Command(sleep, "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() != 0 {
		cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWUSER
		cmd.SysProcAttr.UidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Geteuid(), Size: 1}}
		cmd.SysProcAttr.GidMappings = []syscall.SysProcIDMap{{ContainerID: 0, HostID: os.Getegid(), Size: 1}}
	}
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start a process in a network namespace of its own: %v", err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd.Process.Pid
}

func TestAPIAttachRefusals(t *testing.T) {
	g, dir := apiGateway(t, Options{})
	notNetns := filepath.Join(dir, "coder.yaml")
	self := strconv.Itoa(os.Getpid())
	tests := []struct {
		name, body string
		code       int
		want       string
	}{
		{"bad JSON", `{`, 400, "bad request: unexpected EOF"},
		{"unknown field", `{"pid": 1, "bogus": 1}`, 400, `unknown field "bogus"`},
		{"no target", `{}`, 400, "name exactly one target"},
		{"two targets", `{"pid": 1, "netns": "/x"}`, 400, "name exactly one target"},
		{"unknown policy", `{"pid": 1, "policy": "nosuch"}`, 404, `unknown policy "nosuch" (known: [coder default])`},
		{"no engine", `{"container": "box"}`, 400, "no container engine configured"},
		{"no such process", `{"pid": 2147483647}`, 404, "no process with pid 2147483647"},
		{"no such netns", `{"netns": "/nonexistent/ns"}`, 404, "no network namespace at /nonexistent/ns"},
		{"not a netns", `{"netns": "` + notNetns + `"}`, 400, "is not a network namespace"},
		{"the gateway's own", `{"pid": ` + self + `}`, 400, "pid:" + self + " is the gateway's own network namespace"},
		{"bad name", `{"pid": ` + self + `, "name": "a b"}`, 400, `agent name "a b"`},
	}
	for _, tt := range tests {
		code, body := call(t, g, "POST", "/v1/agents", tt.body)
		wantError(t, "attach "+tt.name, code, body, tt.code, tt.want)
	}
}

// TestAPIAttachReserveRefusals drives the refusals made under the gateway's
// lock (name or namespace taken, agent limit, shutting down) with a
// namespace that is not the gateway's own.
func TestAPIAttachReserveRefusals(t *testing.T) {
	pid := otherNetnsPID(t)
	ns, err := tun.NetnsOfPID(pid)
	if err != nil {
		t.Fatal(err)
	}
	nsID := ns.ID()
	ns.Close()
	res := fakeResolver{id: "c0ffee", name: "box", pid: pid}
	g, _ := apiGateway(t, Options{Containers: res})
	byPID := fmt.Sprintf(`{"pid": %d}`, pid)
	tests := []struct {
		name, body string
		setup      func()
		code       int
		want       string
	}{
		{"name taken", byPID, func() { g.agents[fmt.Sprintf("pid-%d", pid)] = nil }, 409, "already attached"},
		{"container name taken", `{"container": "box"}`, func() { g.agents["box"] = nil }, 409, `an agent called "box" is already attached`},
		{"namespace taken", byPID, func() { g.byNetns[nsID] = "other" }, 409, `is already attached as agent "other"`},
		{"agent limit", byPID, func() { g.cfg.Limits.Agents = 1; g.agents["other"] = nil }, 429, "limits.agents"},
		{"shutting down", byPID, func() { g.closed = true }, 503, "gateway is shutting down"},
	}
	for _, tt := range tests {
		g.mu.Lock()
		g.agents, g.byNetns, g.closed, g.cfg.Limits.Agents = map[string]*Agent{}, map[string]string{}, false, 10
		tt.setup()
		agents, namespaces := len(g.agents), len(g.byNetns)
		g.mu.Unlock()
		code, body := call(t, g, "POST", "/v1/agents", tt.body)
		wantError(t, "attach with "+tt.name, code, body, tt.code, tt.want)
		g.mu.Lock()
		if len(g.agents) != agents || len(g.byNetns) != namespaces {
			t.Errorf("attach with %s left a reservation: agents %v, namespaces %v", tt.name, g.agents, g.byNetns)
		}
		g.mu.Unlock()
	}
}

func TestAPIResolverErrors(t *testing.T) {
	g, _ := apiGateway(t, Options{Containers: fakeResolver{err: fmt.Errorf("%w: no container %q", ErrNotFound, "box")}})
	code, body := call(t, g, "POST", "/v1/agents", `{"container": "box"}`)
	wantError(t, "attach of a container the engine does not know", code, body, 404, `no container "box"`)

	g, _ = apiGateway(t, Options{Containers: fakeResolver{err: errors.New("engine: connection refused")}})
	code, body = call(t, g, "POST", "/v1/agents", `{"container": "box"}`)
	wantError(t, "attach with the engine down", code, body, 500, "engine: connection refused")
}

func TestAPIFollower(t *testing.T) {
	f := &fakeFollower{agent: "gone"}
	g, _ := apiGateway(t, Options{Follower: f})
	code, body := call(t, g, "POST", "/v1/agents", `{"container": "box", "name": "a1", "policy": "coder", "publish": ["8080:80"]}`)
	wantError(t, "attach of a followed container whose agent went away", code, body, 404, `attached as agent "gone", which is gone`)
	if len(f.follows) != 1 || f.follows[0] != "box/a1/coder/8080:80" {
		t.Errorf("Follow calls = %q, want [box/a1/coder/8080:80]", f.follows)
	}

	f.err = fmt.Errorf("attach container %q: %w: an agent called %q is already attached", "box", ErrConflict, "box")
	code, body = call(t, g, "POST", "/v1/agents", `{"container": "box"}`)
	wantError(t, "attach of a followed container, name taken", code, body, 409, "already attached")

	f.follows = nil
	for _, b := range []string{`{"container": "box", "pid": 1}`, `{"container": "box", "policy": "nosuch"}`} {
		code, _ = call(t, g, "POST", "/v1/agents", b)
		if code/100 != 4 || len(f.follows) != 0 {
			t.Errorf("attach %s = %d and %d Follow calls, want a refusal before Follow", b, code, len(f.follows))
		}
	}
}

func TestAPIDetach(t *testing.T) {
	f := &fakeFollower{}
	g, _ := apiGateway(t, Options{Follower: f})
	code, body := call(t, g, "DELETE", "/v1/agents/nosuch", "")
	wantError(t, "detach of an unknown agent", code, body, 404, `no agent called "nosuch"`)
	if f.forgot != "" {
		t.Errorf("detach of an unknown agent forgot container %q", f.forgot)
	}

	// An agent already closed: Detach only has to drop it.
	ns, err := tun.NetnsOfPID(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	g.mu.Lock()
	g.agents["box"] = &Agent{g: g, name: "box", containerID: "c0ffee", ns: ns, closed: true}
	g.byNetns[ns.ID()] = "box"
	g.mu.Unlock()
	code, body = call(t, g, "DELETE", "/v1/agents/box", "")
	if code != http.StatusNoContent || f.forgot != "c0ffee" {
		t.Errorf("detach of a container's agent = %d %q, forgot %q; want 204 and its container forgotten", code, body, f.forgot)
	}
	if code, _ := call(t, g, "DELETE", "/v1/agents/box", ""); code != 404 {
		t.Errorf("second detach = %d, want 404", code)
	}
}

func TestAPIReadOnly(t *testing.T) {
	g, _ := apiGateway(t, Options{})
	code, body := call(t, g, "GET", "/v1/agents", "")
	if code != 200 || strings.TrimSpace(body) != "[]" {
		t.Errorf("GET /v1/agents = %d %q, want 200 []", code, body)
	}
	var st control.Status
	code, body = call(t, g, "GET", "/v1/status", "")
	if err := json.Unmarshal([]byte(body), &st); code != 200 || err != nil || st.Agents != 0 || strings.Join(st.Policies, ",") != "coder,default" || st.Goroutines == 0 {
		t.Errorf("GET /v1/status = %d %q, want 200, no agents, policies coder and default", code, body)
	}
	code, body = call(t, g, "GET", "/v1/version", "")
	if code != 200 || !strings.Contains(body, `"version"`) {
		t.Errorf("GET /v1/version = %d %q", code, body)
	}
}

func TestAPIExplain(t *testing.T) {
	g, _ := apiGateway(t, Options{})
	var e control.Explanation
	code, body := call(t, g, "GET", "/v1/explain?policy=coder&host=api.github.com&port=443", "")
	if err := json.Unmarshal([]byte(body), &e); code != 200 || err != nil || e.Verdict != "allow" || e.Proto != "tcp" {
		t.Errorf("explain api.github.com:443 = %d %q, want 200 allow over tcp", code, body)
	}
	code, body = call(t, g, "GET", "/v1/explain?policy=coder&host=127.0.0.1&port=22", "")
	if err := json.Unmarshal([]byte(body), &e); code != 200 || err != nil || e.Verdict != "deny" || e.Rule != "builtin:host" {
		t.Errorf("explain 127.0.0.1:22 = %d %q, want 200 deny by builtin:host", code, body)
	}
	code, body = call(t, g, "GET", "/v1/explain?policy=coder&host=h&port=99999", "")
	wantError(t, "explain with a bad port", code, body, 400, `bad port "99999"`)
	code, body = call(t, g, "GET", "/v1/explain?policy=nosuch&host=h", "")
	wantError(t, "explain with an unknown policy", code, body, 404, `unknown policy "nosuch"`)
	code, body = call(t, g, "GET", "/v1/explain?policy=coder&host=h&proto=sctp", "")
	wantError(t, "explain with a bad proto", code, body, 400, "sctp")
}

func TestAPIReload(t *testing.T) {
	g, dir := apiGateway(t, Options{})
	if code, body := call(t, g, "POST", "/v1/reload", ""); code != http.StatusOK || !strings.Contains(body, `"policies":["coder","default"]`) {
		t.Errorf("reload = %d %q, want 200 and the policies in force", code, body)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("version: v1\nname: bad\negres: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, body := call(t, g, "POST", "/v1/reload", "")
	wantError(t, "reload with a bad file", code, body, 400, bad+":3:")
	if got := strings.Join(g.Policies(), ","); got != "coder,default" {
		t.Errorf("policies after a bad reload = %s, want coder,default", got)
	}
}

func TestErrStatus(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{fmt.Errorf("%w: x", ErrBadRequest), 400},
		{fmt.Errorf("%w: x", ErrUnreachable), 400},
		{fmt.Errorf("attach container: %w", fmt.Errorf("%w: x", ErrNotFound)), 404},
		{fmt.Errorf("%w: x", ErrConflict), 409},
		{fmt.Errorf("%w: x", ErrLimit), 429},
		{ErrShuttingDown, 503},
		{errors.New("create tun: permission denied"), 500},
	}
	for _, tt := range tests {
		if got := errStatus(tt.err); got != tt.want {
			t.Errorf("errStatus(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// TestServeClosesIdle checks the control server closes a keep-alive
// connection left idle, and stops when its context ends.
func TestServeClosesIdle(t *testing.T) {
	defer func(d time.Duration) { controlIdleTimeout = d }(controlIdleTimeout)
	controlIdleTimeout = 100 * time.Millisecond
	g, _ := apiGateway(t, Options{})
	ignore := goleak.IgnoreCurrent()
	l, err := net.Listen("unix", filepath.Join(t.TempDir(), "api.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ctx, l) }()

	c, err := net.Dial("unix", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /v1/version HTTP/1.1\r\nHost: clawnetd\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if _, err := br.ReadByte(); err != io.EOF {
		t.Errorf("idle keep-alive connection: read = %v after %v, want EOF (closed by the server)", err, time.Since(start))
	}

	cancel()
	if err := <-errc; err != nil {
		t.Errorf("Serve after its context ended = %v, want nil", err)
	}
	if err := goleak.Find(ignore); err != nil {
		t.Errorf("goroutines left behind: %v", err)
	}
}

// notBuilt skips a check of what the gateway's side of a route does while
// that side is still a stand-in.
func notBuilt(t *testing.T, body string) {
	t.Helper()
	if strings.Contains(body, "not built yet") {
		t.Skipf("the gateway's side is not built yet: %s", strings.TrimSpace(body))
	}
}

// TestAPIPublishRefusals: what the publish routes refuse themselves, before
// the gateway is asked.
func TestAPIPublishRefusals(t *testing.T) {
	g, _ := apiGateway(t, Options{})
	tests := []struct {
		name, body string
		want       string
	}{
		{"bad JSON", `{`, "bad request: unexpected EOF"},
		{"unknown field", `{"publish": ["8080:80"], "bogus": 1}`, `unknown field "bogus"`},
		{"no ports", `{"publish": []}`, "name one or more ports"},
		{"no body", ``, "bad request: EOF"},
		{"bad spec", `{"publish": ["8080:80", "80"]}`, `publish "80": no agent port`},
		{"bad proto", `{"publish": ["8080:80/sctp"]}`, `publish "8080:80/sctp": protocol must be tcp or udp`},
		{"bad host address", `{"publish": ["localhost:8080:80"]}`, `host address "localhost" is not an IP address`},
	}
	for _, method := range []string{"POST", "DELETE"} {
		for _, tt := range tests {
			code, body := call(t, g, method, "/v1/agents/a1/publish", tt.body)
			wantError(t, method+" publish with "+tt.name, code, body, 400, tt.want)
		}
	}
	code, body := call(t, g, "POST", "/v1/agents", `{"pid": 1, "publish": ["8080:80", "8080"]}`)
	wantError(t, "attach with a bad publish spec", code, body, 400, `publish "8080": no agent port`)
}

// TestAPIPublishUnknownAgent: publishing for an agent that is not attached
// is a 404 naming it.
func TestAPIPublishUnknownAgent(t *testing.T) {
	g, _ := apiGateway(t, Options{})
	for _, method := range []string{"POST", "DELETE"} {
		code, body := call(t, g, method, "/v1/agents/nosuch/publish", `{"publish": ["8080:80"]}`)
		notBuilt(t, body)
		wantError(t, method+" publish for an unknown agent", code, body, 404, `"nosuch"`)
	}
}

func TestAPIExplainInbound(t *testing.T) {
	g, _ := apiGateway(t, Options{})
	code, body := call(t, g, "GET", "/v1/explain?policy=coder&from=host&host=h&port=80", "")
	wantError(t, "explain with both host and from", code, body, 400, "give host or from, not both")
	code, body = call(t, g, "GET", "/v1/explain?policy=coder&from=host&port=99999", "")
	wantError(t, "inbound explain with a bad port", code, body, 400, `bad port "99999"`)

	code, body = call(t, g, "GET", "/v1/explain?policy=coder&from=host&port=8080", "")
	notBuilt(t, body)
	var e control.Explanation
	if err := json.Unmarshal([]byte(body), &e); code != 200 || err != nil || e.Verdict != "deny" || e.Rule != "default" || e.From != "host" || e.Port != 8080 {
		t.Errorf("explain from host to :8080 under coder (no ingress) = %d %q, want 200 deny by default, from host", code, body)
	}
	code, body = call(t, g, "GET", "/v1/explain?policy=coder&from=agent:a%20b&port=8080", "")
	wantError(t, "explain from a bad peer", code, body, 400, "a b")
	code, body = call(t, g, "GET", "/v1/explain?policy=nosuch&from=host&port=8080", "")
	wantError(t, "inbound explain with an unknown policy", code, body, 404, `unknown policy "nosuch"`)
}
