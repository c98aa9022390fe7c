package netstack

import (
	"errors"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	wgtun "golang.zx2c4.com/wireguard/tun"
	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// maxPacket is the largest IP packet a TUN can carry.
const maxPacket = 65535

// bufPool holds packet-sized buffers shared by every agent, so an idle agent
// holds none on its write path.
var bufPool = sync.Pool{New: func() any { b := make([]byte, maxPacket); return &b }}

// endpoint is a gVisor link endpoint whose wire is a TUN device: a reader
// goroutine delivers each packet the agent sends, and WritePackets writes the
// stack's packets straight to the device from the caller's goroutine (no
// hand-off queue).
type endpoint struct {
	dev wgtun.Device
	mtu uint32
	// gw are the gateway's own addresses on this link: the only ICMP echo
	// destinations that are answered.
	gw []netip.Addr

	mu         sync.RWMutex
	dispatcher stack.NetworkDispatcher // guarded by mu

	writeMu sync.Mutex // serialises writes so batches are not interleaved

	// partial, when set, takes TCP and UDP packets with their checksum
	// left partial: the stack sums none it sends (TX checksum offload), and
	// the agent's kernel, which trusts a partial checksum on local
	// delivery, verifies none either.
	partial partialWriter

	stats *Stats
	done  chan struct{}
	// pace, when set, bounds the packets a second the agent can make the
	// gateway process: over it, the reader waits, so the excess queues in
	// and is dropped by the agent's own kernel, at the flooder's cost.
	pace *rate.Limiter
	// udpPace, when set, bounds the UDP datagrams a second among them:
	// each costs a whole forward, so past it they are dropped at once.
	udpPace *rate.Limiter
}

var _ stack.LinkEndpoint = (*endpoint)(nil)

// Stats counts what crossed one agent's link. Fields are updated atomically.
type Stats struct {
	PacketsIn, PacketsOut atomic.Uint64
	BytesIn, BytesOut     atomic.Uint64
	Dropped               atomic.Uint64
}

func newEndpoint(dev wgtun.Device, mtu uint32, gw []netip.Addr, stats *Stats) *endpoint {
	e := &endpoint{dev: dev, mtu: mtu, gw: gw, stats: stats, done: make(chan struct{})}
	if p, ok := dev.(partialWriter); ok && p.PartialChecksum() {
		e.partial = p
	}
	return e
}

// handOver is the shortest packet read from the device that is handed to the
// stack in the view it was read into; a shorter one is copied into a view of
// its own size, so a small segment never pins a 64 KiB chunk in a receive
// queue (gVisor accounts a segment by its bytes, not its chunk), and the read
// view is kept for the next packet. At or above it the chunk is at most twice
// what it holds, and a bulk upload's 64 KiB segments cross without a copy.
const handOver = maxPacket / 2

// readLoop delivers packets from the device until it is closed. An agent
// starts on a plain pooled buffer, whose untouched pages cost nothing while
// it is idle (a gVisor view is zeroed whole when taken); from its first
// packet of handOver bytes or more, it reads into gVisor views, and a large
// packet becomes the stack's packet buffer as it is.
func (e *endpoint) readLoop() {
	defer close(e.done)
	bp := bufPool.Get().(*[]byte)
	var v *buffer.View // once set, reads land in it, and bp is given back
	defer func() {
		if v != nil {
			v.Release()
		} else {
			bufPool.Put(bp)
		}
	}()
	bufs := [][]byte{*bp}
	sizes := []int{0}
	for {
		n, err := e.dev.Read(bufs, sizes, 0)
		if n > 0 {
			switch {
			case v == nil:
				e.deliver(bufs[0][:sizes[0]], nil)
				if sizes[0] >= handOver {
					bufPool.Put(bp)
					v = buffer.NewViewSize(maxPacket)
					bufs[0] = v.AsSlice()
				}
			case e.deliver(bufs[0][:sizes[0]], v):
				v = buffer.NewViewSize(maxPacket)
				bufs[0] = v.AsSlice()
			}
		}
		if e.pace != nil && n > 0 {
			e.wait(n)
		}
		if err != nil {
			// Closing the device (detach, shutdown) is how the loop
			// ends. The buffer holds the largest packet a TUN carries
			// and the device has no offloads, so no other error is
			// transient: the link is gone (the agent deleted it, say),
			// and spinning on it would help no one.
			if !errors.Is(err, os.ErrClosed) {
				e.stats.Dropped.Add(1)
			}
			return
		}
	}
}

// deliver hands pkt to the stack. When v is set, pkt is the start of v's
// bytes, and a packet of handOver bytes or more is handed over in v itself:
// deliver then reports that it took v, which the caller must replace;
// otherwise v is untouched and reusable.
func (e *endpoint) deliver(pkt []byte, v *buffer.View) (took bool) {
	if len(pkt) == 0 {
		return false
	}
	var proto tcpip.NetworkProtocolNumber
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		proto = header.IPv4ProtocolNumber
	case header.IPv6Version:
		proto = header.IPv6ProtocolNumber
	default:
		e.stats.Dropped.Add(1)
		return false
	}
	if e.isForeignEcho(pkt) {
		e.stats.Dropped.Add(1)
		return false
	}
	if e.udpPace != nil && isUDP(pkt) && !e.udpPace.Allow() {
		e.stats.Dropped.Add(1)
		return false
	}
	e.stats.PacketsIn.Add(1)
	e.stats.BytesIn.Add(uint64(len(pkt)))
	e.mu.RLock()
	d := e.dispatcher
	e.mu.RUnlock()
	if d == nil {
		return false
	}
	payload := v
	if took = v != nil && len(pkt) >= handOver; took {
		v.CapLength(len(pkt))
	} else {
		payload = buffer.NewViewWithData(pkt)
	}
	pb := stack.NewPacketBuffer(stack.PacketBufferOptions{
		Payload: buffer.MakeWithView(payload),
	})
	d.DeliverNetworkPacket(proto, pb)
	pb.DecRef()
	return took
}

// isForeignEcho reports an ICMP echo request to any address but the
// gateway's own. The stack is promiscuous and would otherwise answer pings to
// every address, telling the agent that hosts it cannot reach are up.
func (e *endpoint) isForeignEcho(pkt []byte) bool {
	var dst netip.Addr
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		ip := header.IPv4(pkt)
		if !ip.IsValid(len(pkt)) || ip.TransportProtocol() != header.ICMPv4ProtocolNumber {
			return false
		}
		icmp := header.ICMPv4(ip.Payload())
		if len(icmp) < header.ICMPv4MinimumSize || icmp.Type() != header.ICMPv4Echo {
			return false
		}
		dst = netip.AddrFrom4(ip.DestinationAddress().As4())
	case header.IPv6Version:
		ip := header.IPv6(pkt)
		proto, off, ok := transport6(pkt)
		if !ip.IsValid(len(pkt)) || !ok || proto != uint8(header.ICMPv6ProtocolNumber) {
			return false
		}
		icmp := header.ICMPv6(pkt[off:])
		if len(icmp) < header.ICMPv6MinimumSize || icmp.Type() != header.ICMPv6EchoRequest {
			return false
		}
		dst = netip.AddrFrom16(ip.DestinationAddress().As16())
	default:
		return false
	}
	for _, a := range e.gw {
		if a == dst {
			return false
		}
	}
	return true
}

// isUDP reports whether pkt, a whole IP packet, carries UDP.
func isUDP(pkt []byte) bool {
	switch header.IPVersion(pkt) {
	case header.IPv4Version:
		return len(pkt) >= header.IPv4MinimumSize && pkt[9] == uint8(header.UDPProtocolNumber)
	case header.IPv6Version:
		proto, _, ok := transport6(pkt)
		return ok && proto == uint8(header.UDPProtocolNumber)
	}
	return false
}

// transport6 walks the extension headers of pkt, an IPv6 packet, as the
// stack does, to its transport header: its protocol and offset. The checks
// above look there, not at the fixed header's next header, or an agent
// with a raw socket would pass them by putting an extension header first.
// ok is false when the chain runs past the packet (the stack drops it).
func transport6(pkt []byte) (proto uint8, off int, ok bool) {
	if len(pkt) < header.IPv6MinimumSize {
		return 0, 0, false
	}
	// Each step moves at least 8 bytes on: the walk ends at the packet's
	// end at the latest.
	proto, off = pkt[6], header.IPv6MinimumSize
	for {
		switch header.IPv6ExtensionHeaderIdentifier(proto) {
		case header.IPv6HopByHopOptionsExtHdrIdentifier, header.IPv6RoutingExtHdrIdentifier, header.IPv6DestinationOptionsExtHdrIdentifier:
			if len(pkt) < off+2 {
				return 0, 0, false
			}
			proto, off = pkt[off], off+8*(int(pkt[off+1])+1)
		case header.IPv6FragmentExtHdrIdentifier:
			if len(pkt) < off+1 {
				return 0, 0, false
			}
			proto, off = pkt[off], off+header.IPv6FragmentHeaderSize
		default:
			return proto, off, off <= len(pkt)
		}
	}
}

// wait takes n packets from the agent's budget, sleeping while it is
// spent: one packet's worth (1/rate) at most per call, as the reader takes
// one packet a read, so closing the device is never held up for long.
func (e *endpoint) wait(n int) {
	if r := e.pace.ReserveN(time.Now(), n); r.OK() {
		if d := r.Delay(); d > 0 {
			time.Sleep(d)
		}
	}
}

// WritePackets implements stack.LinkWriter.
func (e *endpoint) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	list := pkts.AsSlice()
	e.writeMu.Lock()
	defer e.writeMu.Unlock()
	written := 0
	vw, _ := e.dev.(vectorWriter)
	for _, pkt := range list {
		n, err := e.write(vw, pkt)
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				if written == 0 {
					return 0, &tcpip.ErrClosedForSend{}
				}
				break
			}
			// The kernel refused this packet (for example the interface
			// is down); count it and go on, as a wire would lose it.
			e.stats.Dropped.Add(1)
			continue
		}
		e.stats.PacketsOut.Add(1)
		e.stats.BytesOut.Add(uint64(n))
		written++
	}
	return written, nil
}

// vectorWriter is a device that writes one packet from several slices
// (tun's fileDevice, with writev).
type vectorWriter interface {
	WriteVectored(parts [][]byte) error
}

// udpChecksumOffset is where a UDP header keeps its checksum.
const udpChecksumOffset = 6

// partialWriter is a device that takes packets whose transport checksum is
// left partial (tun's Device opened with Checksum).
type partialWriter interface {
	PartialChecksum() bool
	WriteVectoredPartial(csumStart, csumOffset uint16, parts [][]byte) error
}

// write writes pkt to the device: from its views as they are when the
// device takes a vector, else copied into one buffer.
func (e *endpoint) write(vw vectorWriter, pkt *stack.PacketBuffer) (int, error) {
	parts := pkt.AsSlices()
	n := 0
	for _, s := range parts {
		n += len(s)
	}
	if e.partial != nil {
		if start, off, ok := setPseudoChecksum(pkt, n); ok {
			return n, e.partial.WriteVectoredPartial(start, off, parts)
		}
	}
	if vw != nil {
		return n, vw.WriteVectored(parts)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	m := 0
	for _, s := range parts {
		m += copy((*bp)[m:], s)
	}
	_, err := e.dev.Write([][]byte{(*bp)[:m]}, 0)
	return n, err
}

// setPseudoChecksum readies a TCP segment or UDP datagram (a packet of size
// bytes) the stack sent unsummed for a partial checksum: it puts the pseudo-header's sum in the
// checksum field and returns where summing starts and where the field is.
// ok is false for anything else, which goes out as the stack made it.
func setPseudoChecksum(pkt *stack.PacketBuffer, size int) (start, off uint16, ok bool) {
	nh, th := pkt.NetworkHeader().Slice(), pkt.TransportHeader().Slice()
	var src, dst tcpip.Address
	switch pkt.NetworkProtocolNumber {
	case header.IPv4ProtocolNumber:
		ip := header.IPv4(nh)
		if len(nh) < header.IPv4MinimumSize || ip.More() || ip.FragmentOffset() != 0 {
			return 0, 0, false
		}
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	case header.IPv6ProtocolNumber:
		// The stack's own packets carry no extension headers; a
		// fragment does, and is left alone.
		if len(nh) != header.IPv6MinimumSize {
			return 0, 0, false
		}
		ip := header.IPv6(nh)
		src, dst = ip.SourceAddress(), ip.DestinationAddress()
	default:
		return 0, 0, false
	}
	switch pkt.TransportProtocolNumber {
	case header.TCPProtocolNumber:
		if len(th) < header.TCPMinimumSize {
			return 0, 0, false
		}
		off = header.TCPChecksumOffset
	case header.UDPProtocolNumber:
		if len(th) < header.UDPMinimumSize {
			return 0, 0, false
		}
		off = udpChecksumOffset
	default:
		return 0, 0, false
	}
	sum := header.PseudoHeaderChecksum(pkt.TransportProtocolNumber, src, dst, uint16(size-len(nh)))
	checksum.Put(th[off:], sum)
	return uint16(len(nh)), off, true
}

// unfragmentedMTU is the stack's MTU when checksums are left partial: the
// largest IPv6 packet (its payload length is 16 bits), and more than any
// IPv4 packet, so the stack never fragments towards the agent. A fragment
// cannot carry a partial checksum, and the stack, offloading checksums,
// would send a fragmented UDP datagram with none, which IPv6 forbids. The
// agent's kernel takes a packet longer than its interface's MTU from the
// TUN (tun's TestOversizePacketsDelivered); TCP never sends one, as both
// ends' MSS come from that MTU.
const unfragmentedMTU = header.IPv6MinimumSize + 0xffff

// MTU is the link's MTU as the stack sees it (see unfragmentedMTU).
func (e *endpoint) MTU() uint32 {
	if e.partial != nil {
		return unfragmentedMTU
	}
	return e.mtu
}

func (e *endpoint) SetMTU(mtu uint32)                       { e.mtu = mtu }
func (e *endpoint) MaxHeaderLength() uint16                 { return 0 }
func (e *endpoint) LinkAddress() tcpip.LinkAddress          { return "" }
func (e *endpoint) SetLinkAddress(tcpip.LinkAddress)        {}
func (e *endpoint) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareNone }
func (e *endpoint) AddHeader(*stack.PacketBuffer)           {}
func (e *endpoint) ParseHeader(*stack.PacketBuffer) bool    { return true }
func (e *endpoint) SetOnCloseAction(func())                 {}

// Capabilities: packets come from the local kernel, which checksums them, so
// the stack need not verify them again.
func (e *endpoint) Capabilities() stack.LinkEndpointCapabilities {
	if e.partial != nil {
		return stack.CapabilityRXChecksumOffload | stack.CapabilityTXChecksumOffload
	}
	return stack.CapabilityRXChecksumOffload
}

func (e *endpoint) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	e.dispatcher = d
	e.mu.Unlock()
}

func (e *endpoint) IsAttached() bool {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.dispatcher != nil
}

// Wait waits for the reader to stop; it stops when the device is closed.
func (e *endpoint) Wait() { <-e.done }

// Close detaches the stack; the device is closed by its owner.
func (e *endpoint) Close() { e.Attach(nil) }
