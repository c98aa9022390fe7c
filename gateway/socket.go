package gateway

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Timeouts of the control API's server. Clients are local and their
// requests small; an idle keep-alive connection is closed rather than held
// for ever, and control.max_connections bounds how many are held at once.
// There is no read or write timeout on a whole request: an attach may wait
// on the container engine, a CPU profile runs for its seconds.
var (
	controlReadHeaderTimeout = 10 * time.Second
	controlIdleTimeout       = 30 * time.Second
)

// ListenControl listens on the unix socket at path, readable and writable by
// root only. A stale socket from a dead daemon is replaced; a live one is an
// error.
func ListenControl(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("control socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another clawnetd is already listening on %s", path)
	}
	_ = os.Remove(path)
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, err
	}
	return &rootOnly{UnixListener: l.(*net.UnixListener)}, nil
}

// rootOnly refuses connections from any user but root, whatever the socket's
// file mode says.
type rootOnly struct{ *net.UnixListener }

func (l *rootOnly) Accept() (net.Conn, error) {
	for {
		c, err := l.UnixListener.AcceptUnix()
		if err != nil {
			return nil, err
		}
		if peerIsRoot(c) {
			return c, nil
		}
		c.Close()
	}
}

func peerIsRoot(c *net.UnixConn) bool {
	raw, err := c.SyscallConn()
	if err != nil {
		return false
	}
	var cred *syscall.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = syscall.GetsockoptUcred(int(fd), syscall.SOL_SOCKET, syscall.SO_PEERCRED)
	}); err != nil || cerr != nil {
		return false
	}
	return cred.Uid == 0
}

// Serve serves the control API on l until ctx ends.
func (g *Gateway) Serve(ctx context.Context, l net.Listener) error {
	return g.serveHTTP(ctx, "control", l, g.Handler())
}

// ServeMetrics serves GET /metrics alone on l (clawnetd's metrics.listen)
// until ctx ends.
func (g *Gateway) ServeMetrics(ctx context.Context, l net.Listener) error {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", g.MetricsHandler())
	return g.serveHTTP(ctx, "metrics", l, mux)
}

// serveHTTP serves h on l, at most control.max_connections at once, until
// ctx ends.
func (g *Gateway) serveHTTP(ctx context.Context, name string, l net.Listener, h http.Handler) error {
	cl := newCapListener(l, g.cfg.Control.MaxConnections)
	g.metrics.listener(name, cl)
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: controlReadHeaderTimeout,
		IdleTimeout:       controlIdleTimeout,
		ConnState:         cl.connState,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(cl) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		return err
	}
}

// silentGrace is how long a new connection may send nothing before it can
// be closed to make room: a local client sends its request at once.
var silentGrace = 250 * time.Millisecond

// capListener serves at most cap(slots) connections at once, so clients
// that connect and linger cannot make the daemon hold a descriptor each.
// Past the cap a new connection takes the place of the one idle longest
// (a keep-alive connection between requests, or one silent for
// silentGrace) and otherwise waits for a slot: waiting, it is the one
// descriptor held beyond the cap, and the kernel's backlog holds the rest.
// The server's ConnState must be connState.
type capListener struct {
	net.Listener
	slots     chan struct{}
	idle      chan struct{} // a connection became idle (1-buffered)
	done      chan struct{} // closed by Close
	closeOnce sync.Once

	mu    sync.Mutex
	conns map[*capConn]struct{} // served now; guarded by mu

	live    atomic.Int64
	evicted atomic.Uint64
}

// capConn is a served connection; it gives its slot back when closed.
type capConn struct {
	net.Conn
	l     *capListener
	once  sync.Once
	state http.ConnState // guarded by l.mu
	since time.Time      // when it entered state; guarded by l.mu
}

func newCapListener(l net.Listener, n int) *capListener {
	return &capListener{Listener: l, slots: make(chan struct{}, n), idle: make(chan struct{}, 1),
		done: make(chan struct{}), conns: map[*capConn]struct{}{}}
}

func (l *capListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	for {
		select {
		case l.slots <- struct{}{}:
			return l.track(c), nil
		default:
		}
		evicted, next := l.evictOne()
		if evicted {
			continue
		}
		t := time.NewTimer(next)
		select {
		case l.slots <- struct{}{}:
			t.Stop()
			return l.track(c), nil
		case <-l.idle:
		case <-t.C:
		case <-l.done:
			t.Stop()
			c.Close()
			return nil, net.ErrClosed
		}
		t.Stop()
	}
}

func (l *capListener) track(c net.Conn) *capConn {
	cc := &capConn{Conn: c, l: l, state: http.StateNew, since: time.Now()}
	l.mu.Lock()
	l.conns[cc] = struct{}{}
	l.mu.Unlock()
	l.live.Add(1)
	return cc
}

// evictOne closes the connection idle longest, if one can be closed; if
// none can, next is when a silent one will have waited silentGrace.
func (l *capListener) evictOne() (evicted bool, next time.Duration) {
	now := time.Now()
	next = silentGrace
	var victim *capConn
	l.mu.Lock()
	for c := range l.conns {
		switch {
		case c.state == http.StateNew && now.Sub(c.since) < silentGrace:
			next = min(next, silentGrace-now.Sub(c.since))
			continue
		case c.state != http.StateIdle && c.state != http.StateNew:
			continue
		}
		if victim == nil || c.since.Before(victim.since) {
			victim = c
		}
	}
	l.mu.Unlock()
	if victim == nil {
		return false, next
	}
	l.evicted.Add(1)
	victim.Close()
	return true, 0
}

// connState follows each connection's state for evictOne.
func (l *capListener) connState(c net.Conn, s http.ConnState) {
	cc, ok := c.(*capConn)
	if !ok {
		return
	}
	l.mu.Lock()
	if _, served := l.conns[cc]; served {
		cc.state, cc.since = s, time.Now()
	}
	l.mu.Unlock()
	if s == http.StateIdle {
		select {
		case l.idle <- struct{}{}:
		default:
		}
	}
}

func (l *capListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

func (c *capConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
		c.l.live.Add(-1)
		<-c.l.slots
	})
	return err
}
