package main

import (
	"net"
	"time"

	"golang.org/x/sys/unix"

	"github.com/clawnet/clawnet/test/canary/canarylog"
)

// tarpitPoll is how often the tarpit looks whether its peer has gone.
const tarpitPoll = 250 * time.Millisecond

// tcpEstablished is TCP_ESTABLISHED of the kernel's tcp_states.h, as
// tcp_info reports it.
const tcpEstablished = 1

// handleTarpit accepts and never reads: whatever the peer sends stays in the
// kernel's receive queue until the window closes, so the peer's side (a
// gateway's copy path, for example) has to hold the rest. It holds the
// connection until the peer closes or resets it, or the canary stops, and
// its close line then has bytes=0. Reading to find the peer's FIN would
// defeat the point, so it looks at the socket's TCP state instead.
func handleTarpit(c *countConn, e *canarylog.Entry) {
	tc, ok := c.Conn.(*net.TCPConn)
	if !ok {
		e.Error = "tarpit: not a TCP connection"
		return
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		e.Error = err.Error()
		return
	}
	for {
		var state uint8
		var serr error
		// Control fails once the canary has closed the connection (at
		// shutdown).
		if err := rc.Control(func(fd uintptr) {
			var info *unix.TCPInfo
			info, serr = unix.GetsockoptTCPInfo(int(fd), unix.SOL_TCP, unix.TCP_INFO)
			if serr == nil {
				state = info.State
			}
		}); err != nil {
			return
		}
		if serr != nil {
			e.Error = serr.Error()
			return
		}
		// Any state past ESTABLISHED means the peer sent a FIN or a reset.
		if state != tcpEstablished {
			return
		}
		time.Sleep(tarpitPoll)
	}
}
