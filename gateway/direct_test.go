package gateway

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawnet/clawnet/dnsproxy/dnstest"
)

// A flow forwarded by address moves bytes on the direct path (direct.go)
// both ways at once: megabytes each way, with the server pausing before it
// reads so that the host socket's buffers and the stack's fill and drain,
// arrive whole and in order, and the close line counts them.
func TestFlowDirectBulkBothWays(t *testing.T) {
	dnstest.LeakCheck(t)
	const up, down = 6 << 20, 9 << 20
	upData, downData := randomBytes(up, 1), randomBytes(down, 2)
	got := make(chan [32]byte, 1)
	ft := newFlowTest(t, 0, func(c net.Conn) {
		sent := make(chan struct{})
		go func() {
			defer close(sent)
			c.Write(downData)
			c.(*loggedConn).CloseWrite()
		}()
		time.Sleep(200 * time.Millisecond) // let the agent's upload back up
		h := sha256.New()
		io.Copy(h, c.(*loggedConn).Conn)
		got <- [32]byte(h.Sum(nil))
		<-sent
	}, nil)
	dst := netip.AddrPortFrom(flowTestServer, 80)
	c, err := ft.dial(t, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write(upData)
		if err == nil {
			err = c.CloseWrite()
		}
		wrote <- err
	}()
	time.Sleep(200 * time.Millisecond) // let the download back up too
	back, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("agent's read: %v after %d bytes", err, len(back))
	}
	if err := <-wrote; err != nil {
		t.Fatalf("agent's write: %v", err)
	}
	if len(back) != down || sha256.Sum256(back) != sha256.Sum256(downData) {
		t.Fatalf("agent received %d bytes, not the %d the server sent (or not the same)", len(back), down)
	}
	select {
	case h := <-got:
		if h != sha256.Sum256(upData) {
			t.Fatal("the server received other bytes than the agent sent")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server never saw the agent's EOF")
	}
	cl := ft.waitEvent(t, EventClose, dst)
	if *cl.BytesUp != up || *cl.BytesDown != down {
		t.Errorf("close line counts up %d down %d, want %d and %d", *cl.BytesUp, *cl.BytesDown, up, down)
	}
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// Urgent data from the upstream (TCP's URG, MSG_OOB) reaches the agent in
// the stream, and the flow goes on: the direct path reads as many bytes as
// the socket says it holds, urgent byte included.
func TestFlowDirectUrgentData(t *testing.T) {
	dnstest.LeakCheck(t)
	ft := newFlowTest(t, 0, func(c net.Conn) {
		tc := c.(*loggedConn).Conn.(*net.TCPConn)
		tc.Write([]byte("before|"))
		time.Sleep(50 * time.Millisecond)
		rc, _ := tc.SyscallConn()
		rc.Write(func(fd uintptr) bool {
			unix.Sendto(int(fd), []byte("!"), unix.MSG_OOB, nil)
			return true
		})
		time.Sleep(50 * time.Millisecond)
		tc.Write([]byte("|after"))
		tc.CloseWrite()
		io.ReadAll(tc)
	}, nil)
	dst := netip.AddrPortFrom(flowTestServer, 80)
	c, err := ft.dial(t, dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "before|!|after" {
		t.Fatalf("agent read %q, %v; want every byte, the urgent one in its place, then EOF", got, err)
	}
}
