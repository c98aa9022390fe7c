package dnsproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/miekg/dns"
)

// Upstream timing. An agent's stub resolver typically waits 5 s before it
// retries, so the whole walk over the servers fits in that.
const (
	upstreamTryTimeout = 2 * time.Second
	// UpstreamTimeout bounds one query's whole walk over the servers: the
	// caller's context for Resolve should end by then.
	UpstreamTimeout = 5 * time.Second
	// upstreamUDPSize is the EDNS buffer the gateway advertises upstream
	// (DNS flag day 2020: no IP fragmentation); larger answers come by TCP.
	upstreamUDPSize = 1232
	// resolvConfCheck is how often the host's resolv.conf is looked at for
	// changes (the host's resolvers change with its networks).
	resolvConfCheck = 5 * time.Second
)

// errNoUpstream means there is no server to ask.
var errNoUpstream = errors.New("no upstream dns server configured")

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
	// TryTimeout bounds one exchange with one server; 0 means 2 s.
	TryTimeout time.Duration
}

// Upstream asks the configured servers in turn, over UDP with a TCP retry
// when the answer is truncated. It is safe for concurrent use.
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
		tryTimeout: upstreamTryTimeout,
		path:       opts.ResolvConf,
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
				}
				u.stamp = stamp
			}
		}
	}
	return u.servers
}

// Exchange asks the servers in turn until one gives a checked answer
// (Exchanger), all have failed, or ctx ends.
func (u *Upstream) Exchange(ctx context.Context, m *dns.Msg) (*dns.Msg, error) {
	servers := u.list()
	if len(servers) == 0 {
		return nil, errNoUpstream
	}
	var errs []error
	for _, s := range servers {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		r, err := u.ask(ctx, s, m)
		if err == nil {
			return r, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", s, err))
	}
	return nil, fmt.Errorf("no upstream answered: %w", errors.Join(errs...))
}

// ask asks one server, over UDP and then over TCP if the answer came back
// truncated. Anything but a matching NOERROR or NXDOMAIN is an error, so
// that the next server is tried.
func (u *Upstream) ask(ctx context.Context, s netip.AddrPort, m *dns.Msg) (*dns.Msg, error) {
	r, err := u.try(ctx, &u.udp, s, m)
	if err == nil && r.Truncated {
		r, err = u.try(ctx, &u.tcp, s, m)
		if err == nil && r.Truncated {
			err = errors.New("answer truncated over tcp")
		}
	}
	if err != nil {
		return nil, err
	}
	if err := checkAnswer(m, r); err != nil {
		return nil, err
	}
	return r, nil
}

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
