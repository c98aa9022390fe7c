package gateway

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// serveControl serves g's control API on a fresh unix socket until the test
// ends, and checks that it stopped without leaving goroutines behind.
func serveControl(t *testing.T, g *Gateway) string {
	t.Helper()
	ignore := goleak.IgnoreCurrent()
	path := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("Serve = %v", err)
		}
		if err := goleak.Find(ignore); err != nil {
			t.Errorf("goroutines left behind: %v", err)
		}
	})
	return path
}

// keepAlive is a client connection that has made one request and keeps
// the connection open.
type keepAlive struct {
	c  net.Conn
	br *bufio.Reader
}

func get(t *testing.T, path, target string) (*keepAlive, error) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "GET "+target+" HTTP/1.1\r\nHost: clawnetd\r\n\r\n"); err != nil {
		c.Close()
		return nil, err
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		c.Close()
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	c.SetDeadline(time.Time{})
	return &keepAlive{c, br}, nil
}

// closedWithin reports whether the server closed k within d.
func (k *keepAlive) closedWithin(d time.Duration) bool {
	k.c.SetReadDeadline(time.Now().Add(d))
	_, err := k.br.ReadByte()
	return err == io.EOF
}

// TestControlCapEvictsIdle: at the cap, a new client is served at once in
// the place of the keep-alive connection idle longest.
func TestControlCapEvictsIdle(t *testing.T) {
	g, _ := apiGateway(t, Options{})
	g.cfg.Control.MaxConnections = 4
	path := serveControl(t, g)
	var held []*keepAlive
	for range 4 {
		k, err := get(t, path, "/v1/version")
		if err != nil {
			t.Fatal(err)
		}
		defer k.c.Close()
		held = append(held, k)
		time.Sleep(5 * time.Millisecond) // an order of idleness
	}
	start := time.Now()
	k, err := get(t, path, "/v1/version")
	if err != nil {
		t.Fatalf("a fifth client at a cap of 4: %v", err)
	}
	defer k.c.Close()
	if took := time.Since(start); took > time.Second {
		t.Errorf("a fifth client waited %v, want it served at once", took)
	}
	if !held[0].closedWithin(time.Second) {
		t.Error("the connection idle longest is still open")
	}
	if held[3].closedWithin(50 * time.Millisecond) {
		t.Error("the connection idle the least was closed too")
	}
	fams := scrape(t, g)
	if v, _ := sample(fams, "clawnet_listener_connections", map[string]string{"listener": "control"}); v > 4 {
		t.Errorf("clawnet_listener_connections = %v, want at most 4", v)
	}
	if v, _ := sample(fams, "clawnet_listener_connections_evicted_total", map[string]string{"listener": "control"}); v < 1 {
		t.Errorf("clawnet_listener_connections_evicted_total = %v, want 1 or more", v)
	}
}

// TestControlCapSilentClients: clients that connect and send nothing hold
// no more than the cap; each is closed, and a real request still gets
// through while they pile up.
func TestControlCapSilentClients(t *testing.T) {
	defer func(g, h time.Duration) { silentGrace, controlReadHeaderTimeout = g, h }(silentGrace, controlReadHeaderTimeout)
	silentGrace, controlReadHeaderTimeout = 50*time.Millisecond, time.Second
	g, _ := apiGateway(t, Options{})
	g.cfg.Control.MaxConnections = 8
	path := serveControl(t, g)

	const clients = 200
	conns := make([]net.Conn, 0, clients)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var most int64
	for range clients {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if n := liveConns(g, "control"); n > most {
			most = n
		}
	}
	start := time.Now()
	k, err := get(t, path, "/v1/status")
	if err != nil {
		t.Fatalf("a request behind %d silent clients: %v", clients, err)
	}
	k.c.Close()
	t.Logf("a request behind %d silent clients took %v", clients, time.Since(start))

	var wg sync.WaitGroup
	closed := make(chan bool, clients)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err := c.Read(make([]byte, 1))
			closed <- err == io.EOF
		}()
	}
	wg.Wait()
	close(closed)
	n := 0
	for ok := range closed {
		if ok {
			n++
		}
	}
	if n != clients {
		t.Errorf("%d of %d silent clients closed by the server, want all", n, clients)
	}
	if most > 8 {
		t.Errorf("%d connections served at once, want at most the cap of 8", most)
	}
}

// liveConns is the number of connections listener name serves now.
func liveConns(g *Gateway, name string) int64 {
	g.metrics.mu.Lock()
	defer g.metrics.mu.Unlock()
	if l := g.metrics.listeners[name]; l != nil {
		return l.live.Load()
	}
	return 0
}
