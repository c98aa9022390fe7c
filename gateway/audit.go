package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/clawnet/clawnet/policy"
)

// AuditEvent is one line of the audit log (the schema is a contract: see
// shared/DESIGN.md). Empty fields are left out.
type AuditEvent struct {
	Time   time.Time `json:"time"`
	Kind   AuditKind `json:"kind"`
	Event  Event     `json:"event,omitempty"` // flow lines only
	Agent  string    `json:"agent"`
	Policy string    `json:"policy"`
	// Direction is "in" for a connection that reaches the agent (from
	// another agent or through a published port); left out for the
	// agent's own outbound flows.
	Direction string `json:"direction,omitempty"`
	// Peer is the other side of a flow between agents or of an inbound
	// one: agent:NAME, host, or remote:ADDR.
	Peer  string `json:"peer,omitempty"`
	Proto string `json:"proto,omitempty"`
	Src   string `json:"src,omitempty"`
	Dst   string `json:"dst,omitempty"`
	Name  string `json:"name,omitempty"`
	SNI   string `json:"sni,omitempty"`
	Host  string `json:"host,omitempty"`
	// Request is the HTTP request ("METHOD target") a deny refused.
	Request string `json:"request,omitempty"`
	QName   string `json:"qname,omitempty"`
	QType   string `json:"qtype,omitempty"`
	RCode   string `json:"rcode,omitempty"`

	Verdict string `json:"verdict"`
	Rule    string `json:"rule,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Error   string `json:"error,omitempty"`

	BytesUp    *uint64 `json:"bytes_up,omitempty"`
	BytesDown  *uint64 `json:"bytes_down,omitempty"`
	DurationMS *int64  `json:"duration_ms,omitempty"`
	// Suppressed counts the lines of this agent and this event (open,
	// close, deny, fail, or dns) left out by its rate limit since the
	// last one written (see audit_limits).
	Suppressed uint64 `json:"suppressed,omitempty"`

	// setup is how long a flow took from the agent's SYN (or first
	// datagram) to its open or fail line, when that time is the upstream
	// dial's; zero otherwise. It feeds the dial latency metric only.
	setup time.Duration
}

// AuditKind says what an audit line is about.
type AuditKind string

const (
	KindFlow AuditKind = "flow"
	KindDNS  AuditKind = "dns"
)

// Event is what happened to a flow.
type Event string

const (
	EventOpen  Event = "open"  // allowed and connected both ways
	EventClose Event = "close" // ended; carries byte counts and duration
	EventDeny  Event = "deny"  // refused by a guard, the policy, a name check or a limit
	EventFail  Event = "fail"  // allowed, but the upstream could not be reached
)

// EventRevoke: live, closed because a changed policy now denies it (revoke.go).
const EventRevoke Event = "revoke"

// line is the audit line of event ev on f, decided by d.
func (f *flow) line(ev Event, d policy.Decision, err error) *AuditEvent {
	e := &AuditEvent{Kind: KindFlow, Event: ev, Proto: f.proto.String(), Src: f.src.String(), Dst: f.dst.String(),
		Name: f.name, SNI: f.sni, Host: f.host, Verdict: d.Verdict.String(), Rule: d.Rule, Reason: d.Reason, Peer: f.peer}
	if f.in {
		e.Direction = "in"
	}
	if err != nil {
		e.Error = err.Error()
	}
	if (ev == EventOpen || ev == EventFail) && !f.in && !f.byName && f.to == nil {
		// Forwarded directly: the decision and the handshake with the
		// agent take microseconds, the rest is the dial.
		e.setup = time.Since(f.start)
	}
	if ev == EventClose {
		up, down := f.up.Load(), f.down.Load()
		ms := time.Since(f.start).Milliseconds()
		e.BytesUp, e.BytesDown, e.DurationMS = &up, &down, &ms
	}
	return e
}

// audit writes the one line of event ev on f.
func (f *flow) audit(ev Event, d policy.Decision, err error) { f.a.event(f.line(ev, d, err)) }

// Audit writes one JSON object per line. Each line is one write, so lines
// from concurrent flows never interleave. A line that cannot be written is
// counted and reported in the daemon's log, never lost silently; Reopen
// starts a new file at the same path, for logrotate.
type Audit struct {
	path string // "" for a writer that cannot be reopened
	log  hclog.Logger

	mu      sync.Mutex
	w       io.Writer // guarded by mu
	c       io.Closer // guarded by mu
	torn    bool      // the last write stopped inside a line; guarded by mu
	failing bool      // the last line was lost; guarded by mu
	lost    uint64    // lines lost since the last report; guarded by mu

	errLog *rate.Limiter // bounds the reports of write errors

	lines      atomic.Uint64 // lines written
	errors     atomic.Uint64 // lines lost to write errors
	reopens    atomic.Uint64
	reopenErrs atomic.Uint64
}

// auditErrorLogEvery bounds how often a failing audit log is reported in
// the daemon's log; each report counts the lines lost since the last.
const auditErrorLogEvery = 10 * time.Second

// OpenAudit opens path for appending, or stderr for "-". Write errors are
// reported to log.
func OpenAudit(path string, log hclog.Logger) (*Audit, error) {
	if path == "-" || path == "" {
		return newAudit(os.Stderr, nil, "", log), nil
	}
	f, err := openAuditFile(path)
	if err != nil {
		return nil, err
	}
	return newAudit(f, f, path, log), nil
}

func openAuditFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return f, nil
}

// NewAudit writes to w (tests); write errors are only counted.
func NewAudit(w io.Writer) *Audit { return newAudit(w, nil, "", nil) }

func newAudit(w io.Writer, c io.Closer, path string, log hclog.Logger) *Audit {
	if log == nil {
		log = hclog.NewNullLogger()
	}
	return &Audit{path: path, log: log, w: w, c: c, errLog: rate.NewLimiter(rate.Every(auditErrorLogEvery), 1)}
}

// Log writes ev, stamping the time if unset.
func (a *Audit) Log(ev *AuditEvent) {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	bp := lineBufs.Get().(*[]byte)
	defer putLineBuf(bp)
	// b starts with a newline, written only to end the line a failed
	// write left half done, so the file stays one JSON object per line.
	b, err := appendAuditLine(append((*bp)[:0], '\n'), ev)
	if err != nil {
		a.failed(fmt.Errorf("encode audit line: %w", err))
		return
	}
	b = append(b, '\n')
	*bp = b
	a.mu.Lock()
	if !a.torn {
		b = b[1:]
	}
	n, err := a.w.Write(b)
	recovered, unreported := false, uint64(0)
	switch {
	case err == nil:
		a.torn = false
		recovered, a.failing = a.failing, false
		unreported, a.lost = a.lost, 0
	case n > 0:
		a.torn = b[n-1] != '\n'
	}
	a.mu.Unlock()
	if err != nil {
		a.failed(fmt.Errorf("write audit line: %w", err))
		return
	}
	a.lines.Add(1)
	if recovered {
		a.log.Info("audit log writable again", "path", a.path, "lost_since_last_report", unreported)
	}
}

// lineBufs holds the buffers audit lines are encoded into; a line is one
// write, and the writer keeps nothing of it (io.Writer's contract).
var lineBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledLine bounds the buffers kept for reuse: a rare huge line (a long
// error or request) is not held for the life of the daemon.
const maxPooledLine = 16 << 10

func putLineBuf(bp *[]byte) {
	if cap(*bp) <= maxPooledLine {
		lineBufs.Put(bp)
	}
}

// appendAuditLine appends ev as one JSON object: byte for byte what
// encoding/json makes of an AuditEvent (field order, omitempty, HTML-safe
// string escapes, RFC 3339 time), without reflection or allocations.
// TestAuditEncoderMatchesJSON holds the two together, over every field.
func appendAuditLine(b []byte, ev *AuditEvent) ([]byte, error) {
	if y := ev.Time.Year(); ev.Time.Location() != time.UTC || y < 0 || y > 9999 {
		// Not a time Log stamps: leave its format, and its errors (a
		// year past 9999), to encoding/json.
		j, err := json.Marshal(ev)
		return append(b, j...), err
	}
	b = append(b, `{"time":"`...)
	b = ev.Time.AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","kind":`...)
	b = appendJSONString(b, string(ev.Kind))
	b = appendOmitEmpty(b, `,"event":`, string(ev.Event))
	b = append(b, `,"agent":`...)
	b = appendJSONString(b, ev.Agent)
	b = append(b, `,"policy":`...)
	b = appendJSONString(b, ev.Policy)
	b = appendOmitEmpty(b, `,"direction":`, ev.Direction)
	b = appendOmitEmpty(b, `,"peer":`, ev.Peer)
	b = appendOmitEmpty(b, `,"proto":`, ev.Proto)
	b = appendOmitEmpty(b, `,"src":`, ev.Src)
	b = appendOmitEmpty(b, `,"dst":`, ev.Dst)
	b = appendOmitEmpty(b, `,"name":`, ev.Name)
	b = appendOmitEmpty(b, `,"sni":`, ev.SNI)
	b = appendOmitEmpty(b, `,"host":`, ev.Host)
	b = appendOmitEmpty(b, `,"request":`, ev.Request)
	b = appendOmitEmpty(b, `,"qname":`, ev.QName)
	b = appendOmitEmpty(b, `,"qtype":`, ev.QType)
	b = appendOmitEmpty(b, `,"rcode":`, ev.RCode)
	b = append(b, `,"verdict":`...)
	b = appendJSONString(b, ev.Verdict)
	b = appendOmitEmpty(b, `,"rule":`, ev.Rule)
	b = appendOmitEmpty(b, `,"reason":`, ev.Reason)
	b = appendOmitEmpty(b, `,"error":`, ev.Error)
	if ev.BytesUp != nil {
		b = strconv.AppendUint(append(b, `,"bytes_up":`...), *ev.BytesUp, 10)
	}
	if ev.BytesDown != nil {
		b = strconv.AppendUint(append(b, `,"bytes_down":`...), *ev.BytesDown, 10)
	}
	if ev.DurationMS != nil {
		b = strconv.AppendInt(append(b, `,"duration_ms":`...), *ev.DurationMS, 10)
	}
	if ev.Suppressed != 0 {
		b = strconv.AppendUint(append(b, `,"suppressed":`...), ev.Suppressed, 10)
	}
	return append(b, '}'), nil
}

// appendOmitEmpty appends key and s, unless s is empty.
func appendOmitEmpty(b []byte, key, s string) []byte {
	if s == "" {
		return b
	}
	return appendJSONString(append(b, key...), s)
}

// jsonPlain marks the ASCII bytes a JSON string carries as they are: not
// control characters, quotes, backslashes, nor <, > and & (escaped, as
// encoding/json does by default, so a line pasted into HTML stays inert).
var jsonPlain = func() (t [utf8.RuneSelf]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = true
	}
	for _, c := range `"\<>&` {
		t[c] = false
	}
	return t
}()

const hexDigits = "0123456789abcdef"

// appendJSONString appends s quoted as encoding/json quotes it: \b \f \n
// \r \t and \" \\ by name, other control characters and <>& as \u00XX,
// each byte of invalid UTF-8 as \ufffd, and U+2028, U+2029 as \u2028,
// \u2029 (they end lines in JavaScript).
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if jsonPlain[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(append(b, s[start:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	return append(append(b, s[start:]...), '"')
}

// failed counts a line lost to err and reports it, at most once every
// auditErrorLogEvery, with the lines lost since the last report.
func (a *Audit) failed(err error) {
	a.errors.Add(1)
	a.mu.Lock()
	a.failing = true
	a.lost++
	lost := a.lost
	report := a.errLog.Allow()
	if report {
		a.lost = 0
	}
	a.mu.Unlock()
	if report {
		a.log.Error("audit lines lost", "path", a.path, "error", err, "lost", lost)
	}
}

// Reopen opens the log's path again and writes there from now on, so that
// a file renamed by logrotate is let go. If the path cannot be opened the
// old file stays in use. Stderr and writers given to NewAudit are kept.
func (a *Audit) Reopen() error {
	if a.path == "" {
		return nil
	}
	f, err := openAuditFile(a.path)
	if err != nil {
		a.reopenErrs.Add(1)
		a.log.Error("audit log not reopened; still writing to the old file", "path", a.path, "error", err)
		return err
	}
	a.mu.Lock()
	old := a.c
	a.w, a.c, a.torn = f, f, false
	a.mu.Unlock()
	a.reopens.Add(1)
	if old != nil {
		_ = old.Close()
	}
	a.log.Info("audit log reopened", "path", a.path)
	return nil
}

// AuditStats are an Audit's counters since it was opened.
type AuditStats struct {
	Lines, Errors, Reopens, ReopenErrors uint64
}

// Stats returns the counters.
func (a *Audit) Stats() AuditStats {
	return AuditStats{Lines: a.lines.Load(), Errors: a.errors.Load(), Reopens: a.reopens.Load(), ReopenErrors: a.reopenErrs.Load()}
}

// Close closes the log file; later lines are counted as lost.
func (a *Audit) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.c != nil {
		return a.c.Close()
	}
	return nil
}

// auditClass is a bucket of an agent's audit rate limit: each event on its
// own, so a storm of one kind never hides the lines of another.
type auditClass uint8

const (
	classOpen auditClass = iota
	classClose
	classDeny
	classFail
	classDNS
	// classDNSLimited holds the lines of queries refused by the agent's
	// DNS rate limit: a flood past that limit writes about one a second,
	// and never uses up the bucket of the queries it let through.
	classDNSLimited
	// classOther holds events this version does not know, limited as
	// denies are.
	classOther
	numAuditClasses
)

var auditClassNames = [numAuditClasses]string{"open", "close", "deny", "fail", "dns", "dns-limited", "other"}

// dnsLimitedLines is the rate of classDNSLimited; the burst of 2 lets one
// through when the resolver's own one-a-second limit sends it a little
// early.
const dnsLimitedLines = 1

// classOf is the bucket of ev; limited is false for lines no agent can
// cause in numbers: a revoke follows an operator's policy change and is
// bounded by limits.flows_per_agent.
func classOf(ev *AuditEvent) (c auditClass, limited bool) {
	if ev.Kind == KindDNS {
		if ev.Rule == ruleDNSRateLimit {
			return classDNSLimited, true
		}
		return classDNS, true
	}
	switch ev.Event {
	case EventOpen:
		return classOpen, true
	case EventClose:
		return classClose, true
	case EventDeny:
		return classDeny, true
	case EventFail:
		return classFail, true
	case EventRevoke:
		return 0, false
	}
	return classOther, true
}

// agentAudit is what one agent's audit lines pass through: a rate limit per
// class, whose left-out lines are counted on the next line of that class,
// and the counts its metrics are read from.
type agentAudit struct {
	once    sync.Once
	buckets [numAuditClasses]auditBucket // made at the first line

	counts agentCounts
}

type auditBucket struct {
	lim        *rate.Limiter
	suppressed atomic.Uint64
}

func (aa *agentAudit) init(l AuditLimitsConfig) {
	aa.once.Do(func() {
		for c, r := range [numAuditClasses]AuditRate{
			classOpen: l.Open, classClose: l.Close, classDeny: l.Deny, classFail: l.Fail, classDNS: l.DNS,
			classDNSLimited: {PerSecond: dnsLimitedLines, Burst: 2}, classOther: l.Deny,
		} {
			aa.buckets[c].lim = rate.NewLimiter(rate.Limit(r.PerSecond), r.Burst)
		}
	})
}

// admit reports whether ev of class c is written. If it is, ev.Suppressed
// gets what the bucket left out since its last line; if not, ev and what
// it already counted as suppressed are left to the next.
func (aa *agentAudit) admit(l AuditLimitsConfig, c auditClass, ev *AuditEvent) bool {
	aa.init(l)
	b := &aa.buckets[c]
	if !b.lim.Allow() {
		b.suppressed.Add(1 + ev.Suppressed)
		return false
	}
	ev.Suppressed += b.suppressed.Swap(0)
	return true
}
