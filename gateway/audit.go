package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

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
	// Suppressed counts deny lines of this agent left out by the rate
	// limit since the last one written.
	Suppressed uint64 `json:"suppressed,omitempty"`
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
// from concurrent flows never interleave.
type Audit struct {
	mu sync.Mutex
	w  io.Writer // guarded by mu
	c  io.Closer
}

// OpenAudit opens path for appending, or stderr for "-".
func OpenAudit(path string) (*Audit, error) {
	if path == "-" || path == "" {
		return &Audit{w: os.Stderr}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open audit log: %w", err)
	}
	return &Audit{w: f, c: f}, nil
}

// NewAudit writes to w (tests).
func NewAudit(w io.Writer) *Audit { return &Audit{w: w} }

// Log writes ev, stamping the time if unset.
func (a *Audit) Log(ev *AuditEvent) {
	if ev.Time.IsZero() {
		ev.Time = time.Now().UTC()
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	b = append(b, '\n')
	a.mu.Lock()
	_, _ = a.w.Write(b)
	a.mu.Unlock()
}

// Close closes the log file.
func (a *Audit) Close() error {
	if a.c != nil {
		return a.c.Close()
	}
	return nil
}
