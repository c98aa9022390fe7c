package netstack

import (
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// TestUDPBudget: past UDPPacketsPerSecond (and its burst) a datagram is
// dropped before the stack sees it; TCP is not counted against it.
func TestUDPBudget(t *testing.T) {
	var udp, syn atomic.Int32
	_, ch := newTestStack(t, Config{
		UDPPacketsPerSecond: 0.001, UDPPacketBurst: 3,
		PacketsPerSecond: 1e6, PacketBurst: 1e6,
		UDP: func(*UDPRequest) bool { udp.Add(1); return false },
		TCP: func(r *TCPRequest) { syn.Add(1); r.Reject() },
	})
	drain(t, ch.Inbound)
	for i := range 10 {
		ch.Outbound <- udpPacket(netip.AddrPortFrom(agentAddr, uint16(40000+i)), netip.AddrPortFrom(farAddr, 9), []byte("x"))
	}
	for i := range 5 {
		ch.Outbound <- tcpSYN(netip.AddrPortFrom(agentAddr, uint16(41000+i)), netip.AddrPortFrom(farAddr, 80))
	}
	deadline := time.Now().Add(5 * time.Second)
	for syn.Load() < 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if syn.Load() != 5 {
		t.Fatalf("%d of 5 SYNs reached the stack: TCP must not count against the UDP budget", syn.Load())
	}
	if got := udp.Load(); got != 3 {
		t.Fatalf("%d of 10 datagrams reached the stack, want the burst of 3", got)
	}
}

// TestUDPBudgetExtensionHeaders: an IPv6 datagram behind extension headers
// (a destination options header here; a raw socket in the agent can add
// one) counts against the UDP budget as a plain one does.
func TestUDPBudgetExtensionHeaders(t *testing.T) {
	var udp, syn atomic.Int32
	_, ch := newTestStack(t, Config{
		UDPPacketsPerSecond: 0.001, UDPPacketBurst: 3,
		PacketsPerSecond: 1e6, PacketBurst: 1e6,
		UDP: func(*UDPRequest) bool { udp.Add(1); return false },
		TCP: func(r *TCPRequest) { syn.Add(1); r.Reject() },
	})
	drain(t, ch.Inbound)
	dst := netip.AddrPortFrom(farAddr6, 9)
	for i := range 10 {
		src := netip.AddrPortFrom(agentAddr6, uint16(40000+i))
		ch.Outbound <- ip6(src.Addr(), dst.Addr(), header.UDPProtocolNumber, udpDgram(src, dst, []byte("x")),
			optsExt6(header.IPv6DestinationOptionsExtHdrIdentifier, nil))
	}
	// The barrier: a SYN read after them reaches the stack after them.
	ch.Outbound <- tcpSYN(netip.AddrPortFrom(agentAddr, 41000), netip.AddrPortFrom(farAddr, 80))
	deadline := time.Now().Add(5 * time.Second)
	for syn.Load() < 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := udp.Load(); got != 3 {
		t.Fatalf("%d of 10 datagrams behind a destination options header reached the stack, want the burst of 3", got)
	}
}

// TestPacketBudgetPaces: past PacketsPerSecond the reader slows to the
// budget instead of dropping: every packet arrives, over the time the
// budget allows.
func TestPacketBudgetPaces(t *testing.T) {
	var udp atomic.Int32
	_, ch := newTestStack(t, Config{
		PacketsPerSecond: 100, PacketBurst: 1,
		UDP: func(*UDPRequest) bool { udp.Add(1); return false },
	})
	drain(t, ch.Inbound)
	start := time.Now()
	for i := range 20 {
		ch.Outbound <- udpPacket(netip.AddrPortFrom(agentAddr, uint16(40000+i)), netip.AddrPortFrom(farAddr, 9), []byte("x"))
	}
	deadline := time.Now().Add(5 * time.Second)
	for udp.Load() < 20 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if udp.Load() != 20 {
		t.Fatalf("%d of 20 packets reached the stack", udp.Load())
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Fatalf("20 packets at 100 a second took %v: the budget did not pace the reader", took)
	}
}

// drain reads what the stack answers (resets, port unreachables) until
// the test ends, so the stack's writes never block.
func drain(t *testing.T, c chan []byte) {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-c:
			case <-stop:
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(stop)
		<-done
	})
}
