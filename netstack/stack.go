// Package netstack runs one agent's userspace TCP/IP stack (gVisor) on the
// agent's TUN device and turns every new TCP or UDP flow into a request the
// gateway decides. It knows gVisor and packets, never policy or YAML.
package netstack

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const nicID tcpip.NICID = 1

// ErrClosed is returned by TCPRequest.Accept once the stack is closing.
var ErrClosed = errors.New("netstack: stack closed")

// Config describes one agent's stack.
type Config struct {
	// Device is the agent's TUN. The stack reads it until it is closed.
	Device wgtun.Device
	MTU    int
	// Gateway are the gateway's own addresses on the agent's link.
	Gateway []netip.Addr
	// MaxInFlight bounds TCP handshakes being decided or dialled at once.
	MaxInFlight int
	// TCP is called, in a goroutine of its own, for every new TCP flow. It
	// must call exactly one of Accept or Reject.
	TCP func(*TCPRequest)
	// UDP is called for the first datagram of every new UDP flow, on the
	// packet path: it must not block. Returning false answers the agent
	// with ICMP port unreachable.
	UDP func(*UDPRequest) bool
	// DNS, when set, receives every UDP datagram to port 53, whatever its
	// destination address, instead of the UDP handler. It is called on the
	// packet path with a payload it must copy if it keeps it; answers go
	// back with WriteUDP.
	DNS func(src, dst netip.AddrPort, payload []byte)
	// TCPBuffer sizes the stack's TCP send and receive buffers.
	TCPBuffer int
	// PacketsPerSecond and PacketBurst, when set, bound how many packets
	// a second the agent can make the stack process: past them the TUN is
	// read no faster, so a flood queues and is dropped in the agent's own
	// kernel instead of taking the gateway's CPU from other agents.
	PacketsPerSecond float64
	PacketBurst      int
	// UDPPacketsPerSecond and UDPPacketBurst, when set, bound the UDP
	// datagrams among them; past them a datagram is dropped at once.
	UDPPacketsPerSecond float64
	UDPPacketBurst      int
}

// Stack is one agent's stack. Its identity is its link: every flow it hands
// out arrived on this agent's TUN, whatever source address it claims.
type Stack struct {
	s     *stack.Stack
	ep    *endpoint
	dev   wgtun.Device
	Stats Stats

	closeOnce sync.Once

	// acceptMu guards the handshakes TCPRequest.Accept is completing, so
	// that Close can end them: gVisor aborts only the endpoints registered
	// when the stack closes, and a handshake begun as it closes would hold
	// its Accept until the SYN-ACK retransmissions run out, minutes later.
	acceptMu  sync.Mutex
	closing   bool                       // guarded by acceptMu
	accepting map[*waiter.Queue]struct{} // guarded by acceptMu
}

// New builds the stack on cfg.Device and starts reading it.
func New(cfg Config) (*Stack, error) {
	if cfg.Device == nil || cfg.TCP == nil || cfg.UDP == nil {
		return nil, errors.New("netstack: device, TCP and UDP handlers are required")
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 256
	}
	if cfg.TCPBuffer <= 0 {
		cfg.TCPBuffer = 4 << 20
	}
	ns := &Stack{dev: cfg.Device, accepting: map[*waiter.Queue]struct{}{}}
	ns.s = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, ipv6.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		// The stack only terminates flows; it never routes between links.
		HandleLocal: false,
	})
	if err := ns.tune(cfg); err != nil {
		ns.s.Destroy()
		return nil, err
	}
	ns.ep = newEndpoint(cfg.Device, uint32(cfg.MTU), cfg.Gateway, &ns.Stats)
	if cfg.PacketsPerSecond > 0 && cfg.PacketBurst > 0 {
		ns.ep.pace = rate.NewLimiter(rate.Limit(cfg.PacketsPerSecond), cfg.PacketBurst)
	}
	if cfg.UDPPacketsPerSecond > 0 && cfg.UDPPacketBurst > 0 {
		ns.ep.udpPace = rate.NewLimiter(rate.Limit(cfg.UDPPacketsPerSecond), cfg.UDPPacketBurst)
	}
	if err := ns.s.CreateNICWithOptions(nicID, ns.ep, stack.NICOptions{Name: "agent"}); err != nil {
		return nil, fmt.Errorf("create nic: %v", err)
	}
	// Promiscuous: accept packets for any destination, so every flow the
	// agent opens reaches the forwarders. Spoofing: reply from that
	// destination's address.
	if err := ns.s.SetPromiscuousMode(nicID, true); err != nil {
		return nil, fmt.Errorf("promiscuous mode: %v", err)
	}
	if err := ns.s.SetSpoofing(nicID, true); err != nil {
		return nil, fmt.Errorf("spoofing: %v", err)
	}
	for _, a := range cfg.Gateway {
		pa := tcpip.ProtocolAddress{AddressWithPrefix: tcpip.AddrFromSlice(a.AsSlice()).WithPrefix()}
		pa.Protocol = ipv4.ProtocolNumber
		if a.Is6() {
			pa.Protocol = ipv6.ProtocolNumber
		}
		if err := ns.s.AddProtocolAddress(nicID, pa, stack.AddressProperties{}); err != nil {
			return nil, fmt.Errorf("add gateway address %s: %v", a, err)
		}
	}
	ns.s.SetRouteTable([]tcpip.Route{
		{Destination: header.IPv4EmptySubnet, NIC: nicID},
		{Destination: header.IPv6EmptySubnet, NIC: nicID},
	})

	tcpFwd := tcp.NewForwarder(ns.s, 0, cfg.MaxInFlight, func(r *tcp.ForwarderRequest) {
		cfg.TCP(&TCPRequest{r: r, Src: fromID(r.ID(), false), Dst: fromID(r.ID(), true), s: ns})
	})
	ns.s.SetTransportProtocolHandler(tcp.ProtocolNumber, tcpFwd.HandlePacket)
	udpFwd := udp.NewForwarder(ns.s, func(r *udp.ForwarderRequest) bool {
		return cfg.UDP(&UDPRequest{r: r, Src: fromID(r.ID(), false), Dst: fromID(r.ID(), true)})
	})
	ns.s.SetTransportProtocolHandler(udp.ProtocolNumber, func(id stack.TransportEndpointID, pkt *stack.PacketBuffer) bool {
		if cfg.DNS != nil && id.LocalPort == 53 {
			cfg.DNS(fromID(id, false), fromID(id, true), pkt.Data().AsRange().ToSlice())
			return true
		}
		return udpFwd.HandlePacket(id, pkt)
	})
	go ns.ep.readLoop()
	return ns, nil
}

func (ns *Stack) tune(cfg Config) error {
	// gVisor refuses a range whose default or minimum exceeds its maximum.
	lo, def := min(4<<10, cfg.TCPBuffer), min(1<<20, cfg.TCPBuffer)
	opts := []tcpip.SettableTransportProtocolOption{
		ptr(tcpip.TCPSACKEnabled(true)),
		&tcpip.TCPReceiveBufferSizeRangeOption{Min: lo, Default: def, Max: cfg.TCPBuffer},
		&tcpip.TCPSendBufferSizeRangeOption{Min: lo, Default: def, Max: cfg.TCPBuffer},
		ptr(tcpip.TCPModerateReceiveBufferOption(true)),
		// Loss recovery by SACK and duplicate ACKs, without RACK-TLP:
		// the link to the agent is a TUN on the same host, which neither
		// reorders nor loses short of a full queue, and RACK costs a
		// timer and a scan on every ACK (tailscale turned it off in
		// its gVisor stack for spurious retransmissions as well).
		ptr(tcpip.TCPRecovery(0)),
		// Reno is gVisor's default; pinned, so that a change of default
		// (cubic has had overflows in gVisor's window arithmetic) is
		// never picked up unmeasured.
		ptr(tcpip.CongestionControlOption("reno")),
		// No TIME-WAIT on the agent's link. gVisor hands a SYN that meets
		// a TIME-WAIT endpoint only to a listener, never to the forwarder:
		// the agent's kernel, which closed second and so keeps no TIME-WAIT
		// of its own, would reuse the port at once and see its SYN dropped
		// for a whole retransmit timeout. On a virtual link with no
		// reordering, TIME-WAIT has no old duplicates to absorb.
		ptr(tcpip.TCPTimeWaitTimeoutOption(0)),
	}
	for _, o := range opts {
		if err := ns.s.SetTransportProtocolOption(tcp.ProtocolNumber, o); err != nil {
			return fmt.Errorf("tcp option %T: %v", o, err)
		}
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// fromID converts a transport endpoint ID. In a forwarder request the
// "local" side is the destination the agent asked for.
func fromID(id stack.TransportEndpointID, local bool) netip.AddrPort {
	if local {
		return netip.AddrPortFrom(addrOf(id.LocalAddress), id.LocalPort)
	}
	return netip.AddrPortFrom(addrOf(id.RemoteAddress), id.RemotePort)
}

func addrOf(a tcpip.Address) netip.Addr {
	ip, _ := netip.AddrFromSlice(a.AsSlice())
	return ip
}

// Close stops the stack: it closes the device (the agent's link goes away),
// aborts every endpoint and waits for the stack's workers.
func (ns *Stack) Close() {
	ns.closeOnce.Do(func() {
		ns.dev.Close()
		// Let the reader finish the packet it may be delivering before
		// the stack's Wait, which waits for it holding the stack's lock:
		// that delivery can need the lock (a UDP endpoint reads options).
		ns.ep.Wait()
		ns.acceptMu.Lock()
		ns.closing = true
		ns.acceptMu.Unlock()
		ns.s.Close()
		ns.endAccepts()
		ns.s.Wait()
		ns.ep.Close()
	})
}

// endAccepts wakes every Accept still completing a handshake, whose
// endpoint then finds itself unconnected and closes, and waits for them to
// return. A wake-up sent before gVisor's handshake waits is lost, so it is
// repeated until none is left.
func (ns *Stack) endAccepts() {
	for {
		ns.acceptMu.Lock()
		n := len(ns.accepting)
		for wq := range ns.accepting {
			wq.Notify(waiter.WritableEvents)
		}
		ns.acceptMu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// TCPRequest is a new TCP flow, held at SYN: the agent's handshake completes
// only when Accept is called.
type TCPRequest struct {
	r        *tcp.ForwarderRequest
	s        *Stack
	Src, Dst netip.AddrPort
	// Buffer, when set before Accept, fixes the connection's send and
	// receive buffers at that many bytes each (no auto-tuning), so the
	// caller knows the most the stack can hold for it.
	Buffer int
}

// Reject resets the agent's connection attempt at once.
func (r *TCPRequest) Reject() { r.r.Complete(true) }

// TCPConn is the agent's side of an accepted TCP flow.
type TCPConn struct {
	*gonet.TCPConn
	ep tcpip.Endpoint
	wq *waiter.Queue
}

// WaitReadable blocks until a Read would not block (data, EOF or an error)
// or done is closed. A proxy waits here before taking a buffer, so an idle
// flow holds none.
func (c *TCPConn) WaitReadable(done <-chan struct{}) {
	c.wait(waiter.ReadableEvents|waiter.EventHUp|waiter.EventErr, done)
}

// Abort resets the connection: the agent sees a reset, not an orderly close.
func (c *TCPConn) Abort() { c.ep.Abort() }

// Accept completes the agent's handshake and returns the connection.
func (r *TCPRequest) Accept() (*TCPConn, error) {
	wq := new(waiter.Queue)
	ns := r.s
	ns.acceptMu.Lock()
	if ns.closing {
		ns.acceptMu.Unlock()
		r.r.Complete(true)
		return nil, ErrClosed
	}
	ns.accepting[wq] = struct{}{}
	ns.acceptMu.Unlock()
	ep, err := r.r.CreateEndpoint(wq)
	ns.acceptMu.Lock()
	delete(ns.accepting, wq)
	closing := ns.closing
	ns.acceptMu.Unlock()
	if err != nil {
		r.r.Complete(true)
		return nil, fmt.Errorf("complete handshake: %v", err)
	}
	r.r.Complete(false)
	if closing {
		// The handshake completed as the stack closed, too late for
		// the stack to abort it.
		ep.Abort()
		ep.Close()
		return nil, ErrClosed
	}
	// Keepalive on the agent's side finds a peer that vanished silently.
	ep.SocketOptions().SetKeepAlive(true)
	if r.Buffer > 0 {
		ep.SocketOptions().SetReceiveBufferSize(int64(r.Buffer), true)
		ep.SocketOptions().SetSendBufferSize(int64(r.Buffer), true)
	}
	return &TCPConn{TCPConn: gonet.NewTCPConn(wq, ep), ep: ep, wq: wq}, nil
}

// UDPRequest is the first datagram of a new UDP flow.
type UDPRequest struct {
	r        *udp.ForwarderRequest
	Src, Dst netip.AddrPort
}

// Accept creates the agent's side of the flow; the first datagram is
// queued on it.
func (r *UDPRequest) Accept() (*gonet.UDPConn, error) {
	var wq waiter.Queue
	ep, err := r.r.CreateEndpoint(&wq)
	if err != nil {
		return nil, fmt.Errorf("create udp endpoint: %v", err)
	}
	return gonet.NewUDPConn(&wq, ep), nil
}
