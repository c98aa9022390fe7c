package gateway

import (
	"fmt"

	"github.com/clawnet/clawnet/policy"
)

// What one agent can make the gateway host hold is bounded by reservation:
// each flow, when admitted, reserves the most its buffers can ever hold
// (its netstack send and receive buffers, fixed per connection; the kernel
// send and receive buffers of its upstream socket, fixed the same way; and
// the two copy buffers of its splice), and the flow is refused once the
// agent's reservations would pass limits.buffer_per_agent. Nothing is
// measured on the packet path, and the bound holds whatever the agent and
// its upstreams do: a slow-reading upstream or a slow-reading agent only
// fills buffers that are already paid for, and TCP's window holds the
// sender back.
//
// The first half of the budget goes to full-sized flows (tcpBufFull each
// buffer, enough for the link's full speed); the rest to small ones
// (tcpBufSmall, still about a gigabyte a second on a link whose round trip
// is tens of microseconds), so many quiet flows fit beside a few fast ones.
const (
	tcpBufFull  = 4 << 20
	tcpBufSmall = 128 << 10
	// udpBuf is what a UDP flow's netstack endpoint can queue (gVisor's
	// default receive buffer, 212 KiB, rounded up), and the receive and
	// send buffers of its upstream socket.
	udpBuf = 256 << 10

	// minBufferPerAgent is the smallest budget config accepts: one
	// full-sized TCP flow.
	minBufferPerAgent = 4*tcpBufFull + 2*copyBufSize
)

// flowCost is what a flow with buffers of buf bytes reserves: for TCP its
// netstack send and receive buffers and its upstream socket's, for UDP the
// netstack's receive queue and the upstream socket's two; and two copy
// buffers either way.
func flowCost(proto policy.Proto, buf int) int64 {
	n := int64(4)
	if proto == policy.ProtoUDP {
		n = 3
	}
	return n*int64(buf) + 2*copyBufSize
}

// reserveLocked sizes f's buffers and reserves them against the agent's
// budget. a.mu must be held.
func (a *Agent) reserveLocked(f *flow) error {
	limit := int64(a.g.cfg.Limits.BufferPerAgent)
	f.buf = udpBuf
	if f.proto == policy.ProtoTCP {
		f.buf = tcpBufFull
		if a.reserved+flowCost(f.proto, tcpBufFull) > limit/2 {
			f.buf = tcpBufSmall
		}
	}
	cost := flowCost(f.proto, f.buf)
	if a.reserved+cost > limit {
		return fmt.Errorf("buffer limit (%d bytes, limits.buffer_per_agent) reached by %d live flows", limit, len(a.flows))
	}
	a.reserved += cost
	f.reserved = cost
	return nil
}
