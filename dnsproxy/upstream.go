package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"
)

// Upstream timing. An agent's stub resolver typically waits 5 s before it
// retries, so the whole walk over the servers, retries included, fits in
// that; each try is short, so one silent server costs a query a second,
// not the whole of it.
const (
	// DefaultTryTimeout bounds one exchange with one server.
	DefaultTryTimeout = time.Second
	// UpstreamTimeout bounds one query's whole walk over the servers: the
	// caller's context for Resolve should end by then.
	UpstreamTimeout = 5 * time.Second
	// triesPerServer bounds how often one query asks one server: once, and
	// once more after a failure with no answer (a datagram lost).
	triesPerServer = 2
	// serverBackoff is how long a server that failed is skipped while
	// another one answers; it doubles with each failure in a row, up to
	// serverBackoffMax.
	serverBackoff    = time.Second
	serverBackoffMax = 30 * time.Second
	// upstreamUDPSize is the EDNS buffer the gateway advertises upstream
	// (DNS flag day 2020: no IP fragmentation); larger answers come by TCP.
	upstreamUDPSize = 1232
	// resolvConfCheck is how often the host's resolv.conf is looked at for
	// changes (the host's resolvers change with its networks).
	resolvConfCheck = 5 * time.Second
)

// errNoUpstream means there is no server to ask.
var errNoUpstream = errors.New("no upstream dns server configured")

// ErrUpstreamDown means the query was not sent: every server failed just
// now and other queries are already asking them again. A flapping upstream
// then costs each query a moment, not a try timeout.
var ErrUpstreamDown = errors.New("every upstream dns server failed just now")

// Exchanger sends one query upstream and returns a checked answer: one
// whose ID and question match, with rcode NOERROR or NXDOMAIN. It is the
// answer path's only way out; Upstream is the real one, tests and the fuzz
// targets put a fake in its place.
type Exchanger interface {
	Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error)
}

// UpstreamOptions says which servers an Upstream asks.
type UpstreamOptions struct {
	// System asks the nameservers listed in ResolvConf (re-read when the
	// file changes); otherwise Servers, in order, and there must be one.
	System  bool
	Servers []netip.AddrPort
	// ResolvConf is the host's resolv.conf, read when System is set.
	ResolvConf string
	// TryTimeout bounds one exchange with one server; 0 means
	// DefaultTryTimeout.
	TryTimeout time.Duration
}

// Upstream asks the configured servers in turn, over UDP with a TCP retry
// when the answer is truncated, and remembers across queries which servers
// failed (health). It is safe for concurrent use.
type Upstream struct {
	log hclog.Logger
	udp dns.Client
	tcp dns.Client
	// tryTimeout bounds one exchange with one server.
	tryTimeout time.Duration

	static []netip.AddrPort // explicit servers; nil means the host's
	path   string           // the host's resolv.conf

	mu      sync.Mutex
	servers []netip.AddrPort // the host's servers; guarded by mu
	checked time.Time        // guarded by mu
	stamp   string           // resolv.conf mtime and size when read; guarded by mu
	// health is what the last queries learnt of each server, for the
	// servers listed now; guarded by mu.
	health map[netip.AddrPort]*health
}

// health is what an Upstream knows of one server from the queries before.
type health struct {
	fails   int       // failures without an answer in a row; 0: the server is up
	retry   time.Time // while another server is up, a down one waits for this
	probing bool      // a query is asking this down server now
	lastErr error     // why it is down
}

var _ Exchanger = (*Upstream)(nil)

// NewUpstream returns an Upstream for opts. With System set, a resolv.conf
// that cannot be read yet is logged, not an error: allowed names fail
// (SERVFAIL) until the host has resolvers.
func NewUpstream(opts UpstreamOptions, log hclog.Logger) (*Upstream, error) {
	up := &Upstream{
		log:        log,
		udp:        dns.Client{Net: "udp", UDPSize: upstreamUDPSize},
		tcp:        dns.Client{Net: "tcp"},
		tryTimeout: DefaultTryTimeout,
		path:       opts.ResolvConf,
		health:     map[netip.AddrPort]*health{},
	}
	if opts.TryTimeout > 0 {
		up.tryTimeout = opts.TryTimeout
	}
	if !opts.System {
		if len(opts.Servers) == 0 {
			return nil, errNoUpstream
		}
		up.static = opts.Servers
		return up, nil
	}
	servers, stamp, err := readResolvConf(opts.ResolvConf)
	if err != nil {
		// The host may get its resolvers later (DHCP); until then allowed
		// names fail with SERVFAIL.
		log.Warn("no upstream dns servers yet", "error", err)
	}
	up.servers, up.stamp, up.checked = servers, stamp, time.Now()
	return up, nil
}

// readResolvConf returns the nameservers of a resolv.conf and a stamp that
// changes when the file does.
func readResolvConf(path string) ([]netip.AddrPort, string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, "", fmt.Errorf("read host resolvers: %w", err)
	}
	stamp := fi.ModTime().String() + "/" + strconv.FormatInt(fi.Size(), 10)
	cc, err := dns.ClientConfigFromFile(path)
	if err != nil {
		return nil, stamp, fmt.Errorf("read host resolvers from %s: %w", path, err)
	}
	port, err := strconv.ParseUint(cc.Port, 10, 16)
	if err != nil || port == 0 {
		port = 53
	}
	var servers []netip.AddrPort
	for _, s := range cc.Servers {
		a, err := netip.ParseAddr(s)
		if err != nil {
			continue
		}
		servers = append(servers, netip.AddrPortFrom(a, uint16(port)))
	}
	if len(servers) == 0 {
		return nil, stamp, fmt.Errorf("%s lists no nameserver", path)
	}
	return servers, stamp, nil
}

// list returns the servers to ask, re-reading the host's resolv.conf when it
// has changed (looked at no more than every resolvConfCheck).
func (u *Upstream) list() []netip.AddrPort {
	if u.static != nil {
		return u.static
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	if time.Since(u.checked) >= resolvConfCheck {
		u.checked = time.Now()
		if fi, err := os.Stat(u.path); err == nil {
			stamp := fi.ModTime().String() + "/" + strconv.FormatInt(fi.Size(), 10)
			if stamp != u.stamp {
				servers, stamp, err := readResolvConf(u.path)
				if err != nil {
					// Keep the last good list rather than go dark on a
					// file caught half-written.
					u.log.Warn("host resolvers unreadable, keeping the last ones", "error", err, "servers", u.servers)
				} else {
					u.log.Info("host resolvers changed", "servers", servers)
					u.servers = servers
					u.forgetLocked(servers)
				}
				u.stamp = stamp
			}
		}
	}
	return u.servers
}

// forgetLocked drops the health of servers no longer listed.
func (u *Upstream) forgetLocked(servers []netip.AddrPort) {
	for s := range u.health {
		if !slices.Contains(servers, s) {
			delete(u.health, s)
		}
	}
}

// Exchange asks the servers until one gives a checked answer (Exchanger),
// every one has failed, or ctx ends. Servers are asked in the order listed,
// skipping one that failed a moment ago while another is up; a server that
// did not answer is asked once more if time is left. When every server is
// down, one query at a time asks each again and the others fail at once
// with ErrUpstreamDown, so a dead upstream does not hold every query for
// its timeouts.
func (u *Upstream) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	servers := u.list()
	if len(servers) == 0 {
		return nil, errNoUpstream
	}
	tries := make([]int, len(servers)) // this query's, by position in servers
	var errs []error
	for {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		i, probe := u.pick(servers, tries)
		if i < 0 {
			break
		}
		s := servers[i]
		tries[i]++
		r, err := u.ask(ctx, s, m)
		u.report(ctx, s, probe, err)
		if err == nil {
			return r, nil
		}
		if errors.As(err, new(*answerError)) {
			tries[i] = triesPerServer // it answers, just not this: no retry
		}
		errs = append(errs, fmt.Errorf("%s: %w", s, err))
	}
	if len(errs) == 0 {
		return nil, u.downError(servers)
	}
	return nil, fmt.Errorf("no upstream answered: %w", errors.Join(errs...))
}

// pick returns the server a query should ask next, given how often it has
// asked each already (tries), or -1 when there is none. probe says the
// server is down and the query now holds its probing mark (report clears
// it). In order of preference:
//   - in the order listed, a server the query has not asked that is up, or
//     down with its backoff over and nobody asking it;
//   - a server that is up that the query may ask again;
//   - when no server that is up is left to it, the down one nobody is
//     asking whose backoff ends first, if the query may ask it (again).
func (u *Upstream) pick(servers []netip.AddrPort, tries []int) (i int, probe bool) {
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	again, down := -1, -1
	for i, s := range servers {
		h := u.healthLocked(s)
		switch {
		case tries[i] >= triesPerServer:
		case h.fails == 0 && tries[i] == 0:
			return i, false
		case h.fails == 0:
			if again < 0 {
				again = i
			}
		case h.probing:
		case tries[i] == 0 && !now.Before(h.retry):
			h.probing = true
			return i, true
		case down < 0 || h.retry.Before(u.healthLocked(servers[down]).retry):
			down = i
		}
	}
	if again >= 0 {
		return again, false
	}
	if down >= 0 {
		u.healthLocked(servers[down]).probing = true
		return down, true
	}
	return -1, false
}

// report records how asking s went. A server that answered is up, even
// with an answer the query cannot use; one that did not is down for a
// backoff. The end of the query's own context (the agent detached, the
// lookup's time is up) says nothing about the server.
func (u *Upstream) report(ctx context.Context, s netip.AddrPort, probe bool, err error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	h := u.healthLocked(s)
	if probe {
		h.probing = false
	}
	switch {
	case err == nil || errors.As(err, new(*answerError)):
		if h.fails > 0 {
			u.log.Debug("upstream dns server answers again", "server", s)
		}
		h.fails, h.retry, h.lastErr = 0, time.Time{}, nil
	case ctx.Err() != nil:
	default:
		if h.fails == 0 {
			u.log.Debug("upstream dns server failed", "server", s, "error", err)
		}
		h.fails++
		h.retry = time.Now().Add(backoff(h.fails))
		h.lastErr = err
	}
}

// backoff is how long a server is skipped after fails failures in a row.
func backoff(fails int) time.Duration {
	if fails > 5 {
		return serverBackoffMax
	}
	return min(serverBackoff<<(fails-1), serverBackoffMax)
}

// healthLocked returns what is known of s, made up on first use.
func (u *Upstream) healthLocked(s netip.AddrPort) *health {
	h, ok := u.health[s]
	if !ok {
		h = &health{}
		u.health[s] = h
	}
	return h
}

// downError says why a query was not sent: each server's last failure.
func (u *Upstream) downError(servers []netip.AddrPort) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	var why []string
	for _, s := range servers {
		if h := u.healthLocked(s); h.lastErr != nil && len(why) < 4 {
			why = append(why, s.String()+": "+h.lastErr.Error())
		}
	}
	return fmt.Errorf("%w, other queries are asking again (%s)", ErrUpstreamDown, strings.Join(why, "; "))
}

// ask asks one server, over UDP and then over TCP if the answer came back
// truncated. Anything but a matching NOERROR or NXDOMAIN is an error, so
// that the next server is tried: an *answerError when the server did
// answer.
func (u *Upstream) ask(ctx context.Context, s netip.AddrPort, m *dns.Msg) (*dns.Msg, error) {
	r, err := u.try(ctx, &u.udp, s, m)
	if err == nil && r.Truncated {
		r, err = u.try(ctx, &u.tcp, s, m)
		switch {
		case err != nil:
			// It did answer over UDP: up, but no use to this query.
			return nil, &answerError{fmt.Errorf("truncated over udp, then %w", err)}
		case r.Truncated:
			return nil, &answerError{errors.New("answer truncated over tcp")}
		}
	}
	if err != nil {
		return nil, err
	}
	if err := checkAnswer(m, r); err != nil {
		return nil, &answerError{err}
	}
	return r, nil
}

// answerError is a server's answer that is not one: the server is up, but
// the query goes on to the next.
type answerError struct{ err error }

func (e *answerError) Error() string { return e.err.Error() }
func (e *answerError) Unwrap() error { return e.err }

// try runs one exchange on a connection of its own, closed as soon as ctx
// is cancelled (miekg/dns only honours a context's deadline), so a detach
// never waits for a slow server.
func (u *Upstream) try(ctx context.Context, c *dns.Client, s netip.AddrPort, m *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, u.tryTimeout)
	defer cancel()
	co, err := c.DialContext(ctx, s.String())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", c.Net, err)
	}
	defer co.Close()
	stop := context.AfterFunc(ctx, func() { co.Close() })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, m, co)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", c.Net, ctx.Err())
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, fmt.Errorf("%s: timed out", c.Net)
		}
		return nil, fmt.Errorf("%s: %w", c.Net, err)
	}
	return r, nil
}

// checkAnswer refuses an answer that is not the answer to q: a hostile or
// confused server must not put records under a name the agent never asked.
func checkAnswer(q, r *dns.Msg) error {
	switch {
	case r.Id != q.Id:
		return errors.New("answer has the wrong id")
	case !r.Response || r.Opcode != dns.OpcodeQuery:
		return errors.New("not an answer to a query")
	case len(r.Question) != 1:
		return fmt.Errorf("answer carries %d questions", len(r.Question))
	case !strings.EqualFold(r.Question[0].Name, q.Question[0].Name) ||
		r.Question[0].Qtype != q.Question[0].Qtype || r.Question[0].Qclass != q.Question[0].Qclass:
		return fmt.Errorf("answer is for another question (%s)", r.Question[0].String())
	}
	switch r.Rcode {
	case dns.RcodeSuccess, dns.RcodeNameError:
		return nil
	}
	return fmt.Errorf("answered %s", rcodeString(r.Rcode))
}
