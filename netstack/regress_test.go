package netstack

import (
	"net/netip"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/tun/tuntest"
)

// A packet can still be on its way into the stack when Close is called: the
// reader took it from the TUN just before the device closed. Close must let
// that delivery finish, not wait for the reader while holding a lock the
// delivery needs. Found by FuzzStackPackets.
func TestCloseWhileDeliveringPacket(t *testing.T) {
	delivering := make(chan struct{})
	ch := tuntest.NewChannelTUN()
	// Not newTestStack: its cleanup would hang on a Close that deadlocked.
	s, err := New(Config{Device: ch.TUN(), MTU: 1500, TCP: func(r *TCPRequest) { r.Reject() }, UDP: func(r *UDPRequest) bool {
		close(delivering)
		// The reader is preempted here while Close runs.
		time.Sleep(100 * time.Millisecond)
		if c, err := r.Accept(); err == nil {
			c.Close()
		}
		return true
	}})
	if err != nil {
		t.Fatal(err)
	}
	ch.Outbound <- udpPacket(netip.AddrPortFrom(agentAddr, 40000), netip.AddrPortFrom(farAddr, 9999), []byte("x"))
	<-delivering
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Stack.Close did not return while a packet was being delivered")
	}
}

// A flow handler may call Accept just as the agent detaches: gVisor aborts
// only the endpoints registered when the stack closes, so a handshake begun
// during Close used to hold Accept until its SYN-ACK retransmissions ran
// out, minutes later. Found by FuzzStackPackets.
func TestAcceptRacingClose(t *testing.T) {
	for i := 0; i < 50; i++ {
		accepted := make(chan error, 1)
		s, ch := newTestStack(t, Config{TCP: func(r *TCPRequest) {
			c, err := r.Accept()
			if err == nil {
				c.Close()
			}
			accepted <- err
		}})
		stop := make(chan struct{})
		go func() {
			for {
				select {
				case <-ch.Inbound:
				case <-stop:
					return
				}
			}
		}()
		ch.Outbound <- tcpSYN(netip.AddrPortFrom(agentAddr, 40000), netip.AddrPortFrom(farAddr, 443))
		s.Close()
		select {
		case <-accepted:
		case <-time.After(5 * time.Second):
			t.Fatalf("round %d: Accept still blocked 5s after Stack.Close", i)
		}
		close(stop)
	}
}

// Config.TCPBuffer below gVisor's 1 MiB default used to fail New.
func TestNewSmallTCPBuffer(t *testing.T) {
	for _, size := range []int{4 << 10, 64 << 10, 1 << 20} {
		ch := tuntest.NewChannelTUN()
		s, err := New(Config{Device: ch.TUN(), MTU: 1500, TCPBuffer: size,
			TCP: func(r *TCPRequest) { r.Reject() }, UDP: func(*UDPRequest) bool { return false }})
		if err != nil {
			t.Errorf("New(TCPBuffer: %d) = %v", size, err)
			continue
		}
		s.Close()
	}
}
