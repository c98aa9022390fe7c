package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/clawnet/clawnet/policy"
)

// TestAuditLineFields: every field shared/DESIGN.md promises on a flow
// decision is on each event's line, and a close adds its counts.
func TestAuditLineFields(t *testing.T) {
	a := &Agent{name: "alice", policy: "coder"}
	f := newFlow(a, policy.ProtoTCP, netip.MustParseAddrPort("100.96.0.2:40000"), netip.MustParseAddrPort("198.18.0.2:443"), 0)
	f.name, f.sni = "api.example", "api.example"
	allow := policy.Decision{Verdict: policy.Allow, Rule: "coder.yaml:4 egress[0]", Reason: "api.example on tcp port 443"}
	deny := policy.Decision{Rule: "default", Reason: "no rule allows tcp to 198.18.0.2:443"}
	common := []string{"time", "kind", "event", "agent", "policy", "proto", "src", "dst", "name", "sni", "verdict", "rule", "reason"}
	tests := []struct {
		ev    Event
		d     policy.Decision
		err   error
		extra []string
	}{
		{EventOpen, allow, nil, nil},
		{EventClose, allow, nil, []string{"bytes_up", "bytes_down", "duration_ms"}},
		{EventDeny, deny, nil, nil},
		{EventFail, allow, errors.New("connect: connection refused"), []string{"error"}},
	}
	for _, tt := range tests {
		ev := f.line(tt.ev, tt.d, tt.err)
		ev.Agent, ev.Policy = a.name, a.policy
		var buf syncBuffer
		NewAudit(&buf).Log(ev)
		var m map[string]any
		if err := json.Unmarshal(buf.b.Bytes(), &m); err != nil {
			t.Fatalf("%s line %q: %v", tt.ev, buf.b.String(), err)
		}
		for _, k := range append(append([]string(nil), common...), tt.extra...) {
			if v, ok := m[k]; !ok || v == "" {
				t.Errorf("%s line lacks %q: %s", tt.ev, k, buf.b.String())
			}
		}
		if m["kind"] != "flow" || m["event"] != string(tt.ev) || m["verdict"] != tt.d.Verdict.String() {
			t.Errorf("%s line = %s", tt.ev, buf.b.String())
		}
	}
}

// TestAuditRateLimitPerEvent: a storm of one event is cut to its bucket
// and leaves every other event's lines alone; what was left out is
// counted, exactly, on the next line of the same event.
func TestAuditRateLimitPerEvent(t *testing.T) {
	var buf syncBuffer
	g, _ := apiGateway(t, Options{Audit: NewAudit(&buf)})
	g.cfg.AuditLimits.Fail = AuditRate{PerSecond: 10, Burst: 5}
	a := listedAgent(t, g, "alice")
	f := newFlow(a, policy.ProtoTCP, netip.MustParseAddrPort("100.96.0.2:40000"), netip.MustParseAddrPort("198.18.0.2:5999"), 0)
	allow := policy.Decision{Verdict: policy.Allow, Rule: "coder.yaml:4 egress[0]", Reason: "r"}
	const storm = 1000
	start := time.Now()
	for i := range storm {
		f.audit(EventFail, allow, errors.New("connect: connection refused"))
		if i%50 == 0 {
			// Between fails, an agent at work opens flows: none is lost.
			f.audit(EventOpen, allow, nil)
		}
	}
	took := time.Since(start)
	time.Sleep(150 * time.Millisecond) // a token for the line that reports the rest
	f.audit(EventFail, allow, errors.New("connect: connection refused"))

	var fails, opens, represented uint64
	for _, ev := range buf.events(t) {
		switch ev.Event {
		case EventFail:
			fails++
			represented += 1 + ev.Suppressed
		case EventOpen:
			opens++
			if ev.Suppressed != 0 {
				t.Errorf("open line with suppressed %d: the fail storm took from the open bucket", ev.Suppressed)
			}
		}
	}
	if max := 5 + uint64(10*(took+150*time.Millisecond).Seconds()) + 2; fails > max {
		t.Errorf("%d fail lines for %d fails in %v, want at most %d", fails, storm+1, took, max)
	}
	if represented != storm+1 {
		t.Errorf("fail lines and their suppressed counts add up to %d, want %d", represented, storm+1)
	}
	if opens != storm/50 {
		t.Errorf("%d open lines written during the fail storm, want all %d", opens, storm/50)
	}
	fams := scrape(t, g)
	if got, _ := sample(fams, "clawnet_flow_failures_total", map[string]string{"agent": "alice"}); got != storm+1 {
		t.Errorf("clawnet_flow_failures_total = %v, want %d (every fail, written or not)", got, storm+1)
	}
	if got, _ := sample(fams, "clawnet_audit_lines_suppressed_total", map[string]string{"event": "fail"}); uint64(got) != storm+1-fails {
		t.Errorf("clawnet_audit_lines_suppressed_total{event=fail} = %v, want %d", got, storm+1-fails)
	}
}

// TestAuditWriteErrors: lines that cannot be written (a full disk, a closed
// file) are counted and reported in the daemon's log, a bounded number of
// times; the log says when writes work again.
func TestAuditWriteErrors(t *testing.T) {
	var logBuf syncBuffer
	log := hclog.New(&hclog.LoggerOptions{Output: &logBuf, JSONFormat: true})
	a, err := OpenAudit("/dev/full", log)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for range 100 {
		a.Log(&AuditEvent{Kind: KindFlow, Event: EventDeny, Agent: "alice"})
	}
	if st := a.Stats(); st.Errors != 100 || st.Lines != 0 {
		t.Errorf("stats after 100 lines to a full disk = %+v, want 100 errors", st)
	}
	reports := strings.Count(logBuf.b.String(), "audit lines lost")
	if reports != 1 || !strings.Contains(logBuf.b.String(), "no space left on device") {
		t.Errorf("daemon log has %d reports, want 1 naming ENOSPC:\n%s", reports, logBuf.b.String())
	}

	path := filepath.Join(t.TempDir(), "audit.log")
	b, err := OpenAudit(path, log)
	if err != nil {
		t.Fatal(err)
	}
	b.Close()
	b.Log(&AuditEvent{Kind: KindFlow, Event: EventDeny, Agent: "alice"})
	if st := b.Stats(); st.Errors != 1 {
		t.Errorf("a line after Close: stats %+v, want 1 error", st)
	}
	if err := b.Reopen(); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.Log(&AuditEvent{Kind: KindFlow, Event: EventDeny, Agent: "alice"})
	if st := b.Stats(); st.Lines != 1 {
		t.Errorf("a line after Reopen: stats %+v, want it written", st)
	}
	if !strings.Contains(logBuf.b.String(), "audit log writable again") {
		t.Errorf("daemon log does not say the audit log works again:\n%s", logBuf.b.String())
	}
}

// tornWriter writes half of its first line and fails, then works.
type tornWriter struct {
	syncBuffer
	failed bool
}

func (w *tornWriter) Write(p []byte) (int, error) {
	if !w.failed {
		w.failed = true
		n, _ := w.syncBuffer.Write(p[:len(p)/2])
		return n, syscall.ENOSPC
	}
	return w.syncBuffer.Write(p)
}

// TestAuditTornLine: after a write that stopped inside a line, the next
// line starts on a line of its own.
func TestAuditTornLine(t *testing.T) {
	var w tornWriter
	a := NewAudit(&w)
	a.Log(&AuditEvent{Kind: KindFlow, Event: EventDeny, Agent: "lost"})
	a.Log(&AuditEvent{Kind: KindFlow, Event: EventDeny, Agent: "kept"})
	lines := strings.Split(strings.TrimSuffix(w.b.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("audit log = %q, want the torn line and a whole one", w.b.String())
	}
	var ev AuditEvent
	if err := json.Unmarshal([]byte(lines[1]), &ev); err != nil || ev.Agent != "kept" {
		t.Errorf("line after a torn one = %q (%v), want a whole JSON object", lines[1], err)
	}
}

// TestAuditReopen: after logrotate renames the file, Reopen writes to a new
// one at the path; if the path cannot be opened, the old file stays.
func TestAuditReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	a, err := OpenAudit(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.Log(&AuditEvent{Kind: KindFlow, Agent: "before"})
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := a.Reopen(); err != nil {
		t.Fatal(err)
	}
	a.Log(&AuditEvent{Kind: KindFlow, Agent: "after"})
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.Contains(string(old), `"before"`) || strings.Contains(string(old), `"after"`) || !strings.Contains(string(cur), `"after"`) {
		t.Errorf("rotated file %q, new file %q: want each line in its own", old, cur)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("new audit log: %v, mode %v, want 0600", err, fi.Mode())
	}

	if err := os.Rename(dir, dir+".gone"); err != nil {
		t.Fatal(err)
	}
	defer os.Rename(dir+".gone", dir)
	if err := a.Reopen(); err == nil {
		t.Error("Reopen with the directory gone succeeded")
	}
	a.Log(&AuditEvent{Kind: KindFlow, Agent: "still"})
	cur, _ = os.ReadFile(filepath.Join(dir+".gone", "audit.log"))
	if !strings.Contains(string(cur), `"still"`) {
		t.Errorf("after a failed Reopen the line went nowhere: %q", cur)
	}
	if st := a.Stats(); st.Reopens != 1 || st.ReopenErrors != 1 {
		t.Errorf("stats %+v, want 1 reopen and 1 failed", st)
	}
}

// listedAgent is an agent of g without a link, listed as attached.
func listedAgent(t *testing.T, g *Gateway, name string) *Agent {
	t.Helper()
	a := &Agent{g: g, log: hclog.NewNullLogger(), name: name, policy: "coder", flows: map[*flow]struct{}{}}
	a.ctx, a.cancel = context.WithCancel(context.Background())
	t.Cleanup(a.cancel)
	g.mu.Lock()
	g.agents[name] = a
	g.mu.Unlock()
	// Gone before g.Close, which would close a link it does not have.
	t.Cleanup(func() {
		g.mu.Lock()
		delete(g.agents, name)
		g.mu.Unlock()
	})
	return a
}

// auditTrickyStrings are strings encoding/json escapes: control
// characters, quotes and backslashes, HTML's <>&, invalid UTF-8, U+2028
// and U+2029, and multi-byte text it leaves alone.
var auditTrickyStrings = []string{
	"", "plain", "tab\there", "nl\ncr\r", "\b\f\x00\x01\x1f\x7f", `quote " back \ slash`,
	"<script>&amp;</script>", "bad \xff\xfe utf8 \xc3", "trunc \xe2\x80", "ls \u2028 ps \u2029 end",
	"héllo wörld ✓ 日本語 🦀", "\ufffd real replacement", "a\u2028", "\xed\xa0\x80 surrogate",
	strings.Repeat("long ", 2000) + "<",
}

// TestAuditEncoderMatchesJSON: the audit encoder writes exactly what
// encoding/json writes for every line the gateway makes (flow open, close,
// deny, fail, revoke; DNS; inbound), for tricky strings in every string
// field, and for every field set at once: the log's format is unchanged.
func TestAuditEncoderMatchesJSON(t *testing.T) {
	check := func(name string, ev *AuditEvent) {
		t.Helper()
		want, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("%s: json: %v", name, err)
		}
		got, err := appendAuditLine(nil, ev)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if string(got) != string(want) {
			t.Errorf("%s:\n got %s\nwant %s", name, got, want)
		}
	}
	now := time.Now().UTC()
	a := &Agent{name: "alice", policy: "coder"}
	f := newFlow(a, policy.ProtoTCP, netip.MustParseAddrPort("100.96.0.2:40000"), netip.MustParseAddrPort("198.18.0.2:443"), 0)
	f.name, f.sni, f.host = "api.example", "api.example", "api.example"
	allow := policy.Decision{Verdict: policy.Allow, Rule: "coder.yaml:4 egress[0]", Reason: "api.example on tcp port 443"}
	deny := policy.Decision{Rule: "default", Reason: "no rule allows tcp to 198.18.0.2:443 <&>"}
	for _, ev := range []Event{EventOpen, EventClose, EventDeny, EventFail, EventRevoke} {
		for _, in := range []bool{false, true} {
			f.in, f.peer = in, ""
			if in {
				f.peer = "agent:bob"
			}
			d := allow
			var err error
			switch ev {
			case EventDeny, EventRevoke:
				d = deny
			case EventFail:
				err = errors.New("dial tcp 198.18.0.2:443: connect: connection refused")
			}
			line := f.line(ev, d, err)
			line.Agent, line.Policy, line.Time = a.name, a.policy, now
			check(fmt.Sprintf("%s in=%v", ev, in), line)
		}
	}
	check("dns", &AuditEvent{Time: now, Kind: KindDNS, Agent: "alice", Policy: "coder", Proto: "udp",
		Src: "100.96.0.2:5353", Dst: "100.96.0.1:53", QName: "api.example.", QType: "A", RCode: "NOERROR",
		Verdict: "allow", Rule: "coder.yaml:4", Suppressed: 17})
	zero, one := uint64(0), int64(0)
	check("close with zero counts", &AuditEvent{Time: now, Kind: KindFlow, Event: EventClose, Verdict: "allow",
		BytesUp: &zero, BytesDown: &zero, DurationMS: &one})
	check("zero time", &AuditEvent{Kind: KindFlow})
	check("times", &AuditEvent{Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)})
	check("times", &AuditEvent{Time: time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC)})
	check("not UTC", &AuditEvent{Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 5*3600+1800))})

	// Every string field, through reflection, so a field added to
	// AuditEvent later is covered without touching this test.
	rv := reflect.ValueOf(AuditEvent{})
	for i := 0; i < rv.NumField(); i++ {
		sf := rv.Type().Field(i)
		if !sf.IsExported() || sf.Type.Kind() != reflect.String {
			continue
		}
		for _, s := range auditTrickyStrings {
			ev := &AuditEvent{Time: now, Kind: KindFlow, Verdict: "deny"}
			reflect.ValueOf(ev).Elem().Field(i).SetString(s)
			check(sf.Name+" "+strconv.Quote(s[:min(len(s), 20)]), ev)
		}
	}
	// Every exported field set at once.
	full := &AuditEvent{}
	fv := reflect.ValueOf(full).Elem()
	for i := 0; i < fv.NumField(); i++ {
		fld := fv.Field(i)
		if !fv.Type().Field(i).IsExported() {
			continue
		}
		switch fld.Kind() {
		case reflect.String:
			fld.SetString(fv.Type().Field(i).Name + " <x>")
		case reflect.Uint64:
			fld.SetUint(uint64(i) + 1)
		case reflect.Pointer:
			p := reflect.New(fld.Type().Elem())
			switch p.Elem().Kind() {
			case reflect.Uint64:
				p.Elem().SetUint(1 << 40)
			case reflect.Int64:
				p.Elem().SetInt(-3)
			}
			fld.Set(p)
		case reflect.Struct:
			fld.Set(reflect.ValueOf(now))
		default:
			t.Fatalf("AuditEvent.%s: a %s field; teach appendAuditLine and this test", fv.Type().Field(i).Name, fld.Kind())
		}
	}
	check("every field", full)
	// Random bytes, as an agent could put in a name or a request.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		b := make([]byte, rng.IntN(24))
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		check("random", &AuditEvent{Time: now, Request: string(b)})
	}
}

// TestAuditEncoderErrors: a time encoding/json refuses is refused the
// same way, and counted as a lost line.
func TestAuditEncoderErrors(t *testing.T) {
	var buf syncBuffer
	au := NewAudit(&buf)
	au.Log(&AuditEvent{Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)})
	if s := au.Stats(); s.Errors != 1 || s.Lines != 0 || buf.b.Len() != 0 {
		t.Fatalf("stats %+v, written %q", s, buf.b.String())
	}
}

// BenchmarkAuditLog: the cost of writing one close line (the most fields).
func BenchmarkAuditLog(b *testing.B) {
	a := &Agent{name: "alice", policy: "coder"}
	f := newFlow(a, policy.ProtoTCP, netip.MustParseAddrPort("100.96.0.2:40000"), netip.MustParseAddrPort("198.18.0.2:443"), 0)
	d := policy.Decision{Verdict: policy.Allow, Rule: "coder.yaml:4 egress[0]", Reason: "198.18.0.0/24 on tcp port 443"}
	au := NewAudit(io.Discard)
	b.ReportAllocs()
	for b.Loop() {
		ev := f.line(EventClose, d, nil)
		ev.Agent, ev.Policy = a.name, a.policy
		au.Log(ev)
	}
}

// BenchmarkAuditEncode: one close line by encoding/json (what the log used
// before) and by appendAuditLine.
func BenchmarkAuditEncode(b *testing.B) {
	a := &Agent{name: "alice", policy: "coder"}
	f := newFlow(a, policy.ProtoTCP, netip.MustParseAddrPort("100.96.0.2:40000"), netip.MustParseAddrPort("198.18.0.2:443"), 0)
	d := policy.Decision{Verdict: policy.Allow, Rule: "coder.yaml:4 egress[0]", Reason: "198.18.0.0/24 on tcp port 443"}
	ev := f.line(EventClose, d, nil)
	ev.Agent, ev.Policy, ev.Time = a.name, a.policy, time.Now().UTC()
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := json.Marshal(ev); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf, _ = appendAuditLine(buf[:0], ev)
		}
	})
}
