package gateway

import (
	"fmt"

	"github.com/clawnet/clawnet/policy"
)

// What one agent can make the gateway hold is bounded by reservation: each
// flow, when admitted, reserves the most its buffers can ever hold (its
// netstack send and receive buffers, fixed per connection, plus the two
// copy buffers of its splice), and the flow is refused once the agent's
// reservations would pass limits.buffer_per_agent. Nothing is measured on
// the packet path, and the bound holds whatever the agent and its upstreams
// do: a slow-reading upstream or a slow-reading agent only fills buffers
// that are already paid for, and TCP's window pushes back on the sender.
//
// The first half of the budget goes to full-sized flows (tcpBufFull each
// way, enough for the link's full speed); the rest to small ones
// (tcpBufSmall, still about a gigabyte a second on a link whose round trip
// is tens of microseconds), so many quiet flows fit beside a few fast ones.
const (
	tcpBufFull  = 4 << 20
	tcpBufSmall = 128 << 10
	// udpBuf is what a UDP flow's endpoint can queue: gVisor's default
	// receive buffer (212 KiB), rounded up.
	udpBuf = 256 << 10

	// minBufferPerAgent is the smallest budget config accepts: one
	// full-sized TCP flow.
	minBufferPerAgent = 2*tcpBufFull + 2*copyBufSize
)

// reserveLocked sizes f's buffers and reserves them against the agent's
// budget. a.mu must be held.
func (a *Agent) reserveLocked(f *flow) error {
	limit := int64(a.g.cfg.Limits.BufferPerAgent)
	var cost int64
	switch f.proto {
	case policy.ProtoTCP:
		f.buf = tcpBufFull
		if a.reserved+2*tcpBufFull+2*copyBufSize > limit/2 {
			f.buf = tcpBufSmall
		}
		cost = 2*int64(f.buf) + 2*copyBufSize
	default:
		f.buf = udpBuf
		cost = int64(f.buf) + 2*copyBufSize
	}
	if a.reserved+cost > limit {
		return fmt.Errorf("buffer limit (%d bytes, limits.buffer_per_agent) reached by %d live flows", limit, len(a.flows))
	}
	a.reserved += cost
	f.reserved = cost
	return nil
}
