package harness

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"
)

// DaemonConfig is what a test chooses about the clawnetd it starts; the
// harness fills in the paths.
type DaemonConfig struct {
	// Policies maps a policy name to the YAML body of its file, written to
	// policy_dir/<name>.yaml. The body's name: field should match.
	Policies map[string]string
	// DefaultPolicy is default_policy; "default" when empty.
	DefaultPolicy string
	// Internet is the test internet the daemon serves; its canary is the
	// DNS upstream unless DNSUpstream says otherwise.
	Internet *Internet
	// DNSUpstream is dns.upstream.
	DNSUpstream []string
	// ExtraConfig is appended verbatim to the config file.
	ExtraConfig string
	// Args are added to clawnetd's command line (--kubeconfig FILE, ...).
	Args []string
}

// Daemon is a running clawnetd.
type Daemon struct {
	Bins Binaries
	// Dir holds the config, policies, audit log, socket and daemon log.
	Dir, ConfigPath, PolicyDir, AuditPath, Socket, LogPath string
	args                                                   []string

	t       testing.TB
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	client  *http.Client
}

// StartDaemon writes a config, starts clawnetd in the foreground and waits
// until its control socket accepts connections. It is stopped (SIGTERM, then
// SIGKILL) and reaped when t ends; the daemon's own log is printed if t
// failed.
func StartDaemon(t testing.TB, cfg DaemonConfig) *Daemon {
	t.Helper()
	RequireRoot(t)
	bins := ClawnetBinaries(t)
	// A unix socket path must fit in 108 bytes; t.TempDir() paths grow with
	// the test name, so the daemon's directory sits directly under /tmp.
	dir, err := os.MkdirTemp("", "cnd")
	if err != nil {
		t.Fatalf("make daemon dir: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	d := &Daemon{
		Bins:       bins,
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "clawnetd.yaml"),
		PolicyDir:  filepath.Join(dir, "policies"),
		AuditPath:  filepath.Join(dir, "audit.log"),
		Socket:     filepath.Join(dir, "clawnet.sock"),
		LogPath:    filepath.Join(dir, "clawnetd.log"),
		args:       cfg.Args,
		t:          t,
	}
	if err := os.Mkdir(d.PolicyDir, 0o755); err != nil {
		t.Fatal(err)
	}
	names := make([]string, 0, len(cfg.Policies))
	for name := range cfg.Policies {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := os.WriteFile(filepath.Join(d.PolicyDir, name+".yaml"), []byte(cfg.Policies[name]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(d.ConfigPath, []byte(d.configYAML(cfg)), 0o644); err != nil {
		t.Fatal(err)
	}
	d.client = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var dl net.Dialer
				return dl.DialContext(ctx, "unix", d.Socket)
			},
			// No idle connections: nothing lingers for the leak check.
			DisableKeepAlives: true,
		},
	}
	d.start(t)
	return d
}

func (d *Daemon) configYAML(cfg DaemonConfig) string {
	def := cfg.DefaultPolicy
	if def == "" {
		def = "default"
	}
	up := cfg.DNSUpstream
	if up == nil && cfg.Internet != nil {
		up = []string{netip.AddrPortFrom(cfg.Internet.Server4, 53).String()}
	}
	if up == nil {
		// Nothing listens on the discard port of loopback: lookups fail
		// without any packet leaving the host.
		up = []string{"127.0.0.1:9"}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version: v1\n")
	fmt.Fprintf(&b, "socket: %s\n", d.Socket)
	fmt.Fprintf(&b, "policy_dir: %s\n", d.PolicyDir)
	fmt.Fprintf(&b, "default_policy: %s\n", def)
	fmt.Fprintf(&b, "llm_provider: anthropic\n")
	fmt.Fprintf(&b, "mcp_servers: []\n")
	fmt.Fprintf(&b, "dns:\n  upstream: [%s]\n", quoteJoin(up))
	fmt.Fprintf(&b, "audit_log: %s\n", d.AuditPath)
	fmt.Fprintf(&b, "treat_as_public: [\"198.18.0.0/15\", \"2001:db8::/32\"]\n")
	if !strings.Contains(cfg.ExtraConfig, "state_dir:") {
		// Each test daemon keeps its attachments apart from the host's.
		fmt.Fprintf(&b, "state_dir: %s\n", filepath.Join(d.Dir, "state"))
	}
	b.WriteString(cfg.ExtraConfig)
	return b.String()
}

func quoteJoin(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = `"` + s + `"`
	}
	return strings.Join(q, ", ")
}

func (d *Daemon) start(t testing.TB) {
	t.Helper()
	logf, err := os.Create(d.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(d.Bins.Clawnetd, append([]string{"--config", d.ConfigPath, "--socket", d.Socket, "--log-format", "json"}, d.args...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = childAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start clawnetd: %v", err)
	}
	logf.Close() // the child has its own copy
	d.cmd = cmd
	d.exited = make(chan struct{})
	go func() {
		d.waitErr = cmd.Wait()
		close(d.exited)
	}()
	t.Cleanup(func() {
		start := time.Now()
		if d.stop(5 * time.Second) {
			t.Errorf("clawnetd did not exit within 5s of SIGTERM; killed it")
		} else if took := time.Since(start); took > time.Second {
			t.Logf("clawnetd took %v to exit after SIGTERM", took.Round(time.Millisecond))
		}
		if t.Failed() {
			t.Logf("clawnetd log (%s):\n%s", d.LogPath, d.LogTail(60))
			t.Logf("audit log (%s):\n%s", d.AuditPath, tail(d.AuditPath, 40))
		}
	})
	ok := Poll(20*time.Second, 10*time.Millisecond, func() bool {
		if d.Exited() {
			return true
		}
		// Ready is the API answering, not the socket accepting: the
		// socket listens before the daemon has re-attached what it had
		// attached, and the API serves only after.
		_, err := d.Get("/v1/version")
		return err == nil
	})
	if d.Exited() {
		t.Fatalf("clawnetd exited at start (%v); log:\n%s", d.waitErr, d.LogTail(40))
	}
	if !ok {
		t.Fatalf("clawnetd socket %s not accepting after 20s; log:\n%s", d.Socket, d.LogTail(40))
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs; it reports whether
// it had to kill.
func (d *Daemon) stop(grace time.Duration) (killed bool) {
	if d.Exited() {
		return false
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
		return false
	case <-time.After(grace):
		d.cmd.Process.Kill()
		<-d.exited
		return true
	}
}

// Restart stops clawnetd (SIGTERM, then SIGKILL after 5s) if it still runs
// and starts it again on the same config, policies, audit log and socket,
// as an operator restarting the service would.
func (d *Daemon) Restart(t testing.TB) {
	t.Helper()
	d.stop(5 * time.Second)
	d.start(t)
}

// Kill sends SIGKILL to clawnetd and waits until it is reaped.
func (d *Daemon) Kill() {
	if d.Exited() {
		return
	}
	d.cmd.Process.Kill()
	<-d.exited
}

// Exited reports whether clawnetd has exited.
func (d *Daemon) Exited() bool {
	select {
	case <-d.exited:
		return true
	default:
		return false
	}
}

// PID is clawnetd's process ID.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// LogTail returns the last n lines of clawnetd's stdout and stderr.
func (d *Daemon) LogTail(n int) string { return tail(d.LogPath, n) }

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// CLI runs the clawnet CLI against this daemon (CLAWNET_SOCKET set) and
// returns what it did.
func (d *Daemon) CLI(args ...string) Result {
	cmd := exec.Command(d.Bins.Clawnet, args...)
	cmd.Env = append(os.Environ(), "CLAWNET_SOCKET="+d.Socket)
	return RunCmd(cmd, 30*time.Second)
}

// MustCLI runs the CLI and fails t unless it exits 0; it returns stdout.
func (d *Daemon) MustCLI(t testing.TB, args ...string) string {
	t.Helper()
	r := d.CLI(args...)
	if !r.OK() {
		t.Fatalf("clawnet %s: %v", strings.Join(args, " "), r)
	}
	return r.Stdout
}

// Agent is one entry of clawnet ls --json.
type Agent struct {
	Name      string   `json:"name"`
	Target    string   `json:"target"`
	Interface string   `json:"interface"`
	Addresses []string `json:"addresses"`
	Gateway   []string `json:"gateway"`
	Policy    string   `json:"policy"`
	Flows     int64    `json:"flows"`
	BytesUp   int64    `json:"bytes_up"`
	BytesDown int64    `json:"bytes_down"`
}

// parseAddrs reads "ip" or "ip/len" forms.
func parseAddrs(ss []string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Addr())
		} else if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// Addr returns the agent's address of one family (4 or 6), or the zero Addr.
func (a Agent) Addr(family int) netip.Addr {
	for _, ip := range parseAddrs(a.Addresses) {
		if (family == 4) == ip.Is4() {
			return ip
		}
	}
	return netip.Addr{}
}

// List runs clawnet ls --json.
func (d *Daemon) List(t testing.TB) []Agent {
	t.Helper()
	out := d.MustCLI(t, "ls", "--json")
	var agents []Agent
	if err := json.Unmarshal([]byte(out), &agents); err != nil {
		t.Fatalf("clawnet ls --json: not a JSON array of agents: %v\n%s", err, out)
	}
	return agents
}

// Lookup returns the listed agent called name.
func (d *Daemon) Lookup(t testing.TB, name string) (Agent, bool) {
	t.Helper()
	for _, a := range d.List(t) {
		if a.Name == name {
			return a, true
		}
	}
	return Agent{}, false
}

// Attach attaches ns under name with policy (by --netns) and returns the
// agent as clawnet ls reports it; it fails t if either step fails.
func (d *Daemon) Attach(t testing.TB, ns *NetNS, name, policy string) Agent {
	t.Helper()
	args := []string{"attach", "--name", name}
	if policy != "" {
		args = append(args, "--policy", policy)
	}
	args = append(args, "--netns", ns.Path)
	d.MustCLI(t, args...)
	a, ok := d.Lookup(t, name)
	if !ok {
		t.Fatalf("attached %s but clawnet ls does not list it: %v", name, d.List(t))
	}
	return a
}

// Status is GET /v1/status.
type Status struct {
	Goroutines int `json:"goroutines"`
	OpenFDs    int `json:"open_fds"`
	Agents     int `json:"agents"`
	Flows      int `json:"flows"`
}

// Get does a GET on the control socket and returns the body.
func (d *Daemon) Get(path string) ([]byte, error) {
	resp, err := d.client.Get("http://clawnet" + path)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: read body: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return body, fmt.Errorf("GET %s: %s: %s", path, resp.Status, bytes.TrimSpace(body))
	}
	return body, nil
}

// Status queries /v1/status.
func (d *Daemon) Status() (Status, error) {
	body, err := d.Get("/v1/status")
	if err != nil {
		return Status{}, err
	}
	var s Status
	if err := json.Unmarshal(body, &s); err != nil {
		return Status{}, fmt.Errorf("parse /v1/status: %w: %s", err, body)
	}
	return s, nil
}

// MustStatus queries /v1/status and fails t on error.
func (d *Daemon) MustStatus(t testing.TB) Status {
	t.Helper()
	s, err := d.Status()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// AuditEntry is one line of the audit log. Raw keeps every field, for those
// the struct does not name.
type AuditEntry struct {
	Time       json.RawMessage `json:"time"`
	Event      string          `json:"event"`
	Kind       string          `json:"kind"`
	Agent      string          `json:"agent"`
	Policy     string          `json:"policy"`
	Proto      string          `json:"proto"`
	Src        string          `json:"src"`
	Dst        string          `json:"dst"`
	Name       string          `json:"name"`
	SNI        string          `json:"sni"`
	Host       string          `json:"host"`
	Verdict    string          `json:"verdict"`
	Rule       string          `json:"rule"`
	Reason     string          `json:"reason"`
	BytesUp    *int64          `json:"bytes_up"`
	BytesDown  *int64          `json:"bytes_down"`
	DurationMS *float64        `json:"duration_ms"`
	Qname      string          `json:"qname"`
	Qtype      string          `json:"qtype"`
	Rcode      string          `json:"rcode"`

	Raw  map[string]any `json:"-"`
	Line string         `json:"-"`
}

// SrcAddr and DstAddr parse Src and Dst as ip:port (zero if they do not).
func (e AuditEntry) SrcAddr() netip.AddrPort { return parseAP(e.Src) }

// DstAddr parses Dst.
func (e AuditEntry) DstAddr() netip.AddrPort { return parseAP(e.Dst) }

func parseAP(s string) netip.AddrPort {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Audit reads the audit log. A line that is not a JSON object fails t: the
// contract is one object per line.
func (d *Daemon) Audit(t testing.TB) []AuditEntry {
	t.Helper()
	f, err := os.Open(d.AuditPath)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatalf("read audit log: %v", err)
	}
	defer f.Close()
	var out []AuditEntry
	br := bufio.NewReader(f)
	for n := 1; ; n++ {
		line, err := br.ReadBytes('\n')
		if err == io.EOF {
			// A line without its newline is still being written.
			return out
		}
		if err != nil {
			t.Fatalf("read audit log: %v", err)
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var e AuditEntry
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatalf("audit log line %d is not a flow/DNS JSON object: %v\n%s", n, err, line)
		}
		if err := json.Unmarshal(line, &e.Raw); err != nil {
			t.Fatalf("audit log line %d: %v", n, err)
		}
		e.Line = string(line)
		out = append(out, e)
	}
}

// WaitAudit waits up to timeout for an audit line pred accepts and returns
// it; it fails t (printing the log) if none comes.
func (d *Daemon) WaitAudit(t testing.TB, timeout time.Duration, what string, pred func(AuditEntry) bool) AuditEntry {
	t.Helper()
	var found *AuditEntry
	var all []AuditEntry
	Poll(timeout, 20*time.Millisecond, func() bool {
		all = d.Audit(t)
		for i := range all {
			if pred(all[i]) {
				found = &all[i]
				return true
			}
		}
		return false
	})
	if found == nil {
		var b strings.Builder
		for _, e := range all {
			b.WriteString("  " + e.Line + "\n")
		}
		t.Fatalf("audit log has no %s after %v; it has:\n%s", what, timeout, b.String())
	}
	return *found
}
