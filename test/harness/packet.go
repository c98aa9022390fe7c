package harness

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"
)

// PacketSocket sends and receives whole IP packets on one interface of a
// namespace, below the kernel's IP layer (AF_PACKET). Tests use it to forge
// what an ordinary socket cannot send: a loopback destination out of a TUN,
// a source address the agent does not own.
type PacketSocket struct {
	fd      int
	ifindex int
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// OpenPacketSocket opens a packet socket bound to ifname inside ns.
func (ns *NetNS) OpenPacketSocket(ifname string) (*PacketSocket, error) {
	var p *PacketSocket
	err := ns.Do(func() error {
		ifi, err := net.InterfaceByName(ifname)
		if err != nil {
			return fmt.Errorf("find %s: %w", ifname, err)
		}
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: ifi.Index}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("bind packet socket to %s: %w", ifname, err)
		}
		p = &PacketSocket{fd: fd, ifindex: ifi.Index}
		return nil
	})
	return p, err
}

// Close closes the socket.
func (p *PacketSocket) Close() error { return unix.Close(p.fd) }

// Send transmits one IP packet out of the interface, as if the namespace's
// stack had routed it there.
func (p *PacketSocket) Send(pkt []byte) error {
	if len(pkt) == 0 {
		return errors.New("empty packet")
	}
	proto := uint16(unix.ETH_P_IP)
	if pkt[0]>>4 == 6 {
		proto = unix.ETH_P_IPV6
	}
	return unix.Sendto(p.fd, pkt, 0, &unix.SockaddrLinklayer{Protocol: htons(proto), Ifindex: p.ifindex})
}

// Recv returns the next packet that arrived on the interface (packets the
// namespace itself sent are skipped), waiting at most timeout.
func (p *PacketSocket) Recv(timeout time.Duration) ([]byte, error) {
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 1<<16)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, errTimeout
		}
		tv := unix.NsecToTimeval(left.Nanoseconds())
		if err := unix.SetsockoptTimeval(p.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return nil, fmt.Errorf("set receive timeout: %w", err)
		}
		n, from, err := unix.Recvfrom(p.fd, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("receive: %w", err)
		}
		if ll, ok := from.(*unix.SockaddrLinklayer); ok && ll.Pkttype == unix.PACKET_OUTGOING {
			continue
		}
		return append([]byte(nil), buf[:n]...), nil
	}
}

// RecvMatch returns the first arriving packet keep accepts, skipping others,
// waiting at most timeout in all.
func (p *PacketSocket) RecvMatch(timeout time.Duration, keep func(Packet) bool) (Packet, error) {
	deadline := time.Now().Add(timeout)
	for {
		b, err := p.Recv(time.Until(deadline))
		if err != nil {
			return Packet{}, err
		}
		if pkt, err := ParsePacket(b); err == nil && keep(pkt) {
			return pkt, nil
		}
	}
}

var errTimeout = errors.New("no packet before the timeout")

// IsTimeout reports whether err is Recv's timeout.
func IsTimeout(err error) bool { return errors.Is(err, errTimeout) }

// IP protocol numbers used by the packet helpers.
const (
	ProtoICMP   = 1
	ProtoTCP    = 6
	ProtoUDP    = 17
	ProtoICMPv6 = 58
)

// TCP flags.
const (
	TCPFin = 0x01
	TCPSyn = 0x02
	TCPRst = 0x04
	TCPAck = 0x10
)

// TCPSYN builds an IPv4 or IPv6 packet (by src's family) holding a TCP SYN
// from src to dst with an MSS option.
func TCPSYN(src, dst netip.AddrPort, seq uint32) []byte {
	tcp := make([]byte, 24)
	binary.BigEndian.PutUint16(tcp[0:], src.Port())
	binary.BigEndian.PutUint16(tcp[2:], dst.Port())
	binary.BigEndian.PutUint32(tcp[4:], seq)
	tcp[12] = 6 << 4 // data offset: 6 words
	tcp[13] = TCPSyn
	binary.BigEndian.PutUint16(tcp[14:], 64240) // window
	copy(tcp[20:], []byte{2, 4, 0x05, 0xb4})    // MSS 1460
	return ipPacket(src.Addr(), dst.Addr(), ProtoTCP, tcp, 16)
}

// UDPPacket builds an IPv4 or IPv6 packet holding one UDP datagram.
func UDPPacket(src, dst netip.AddrPort, payload []byte) []byte {
	udp := make([]byte, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], src.Port())
	binary.BigEndian.PutUint16(udp[2:], dst.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[8:], payload)
	return ipPacket(src.Addr(), dst.Addr(), ProtoUDP, udp, 6)
}

// ipPacket wraps an L4 segment, filling its checksum at csumOff.
func ipPacket(src, dst netip.Addr, proto uint8, l4 []byte, csumOff int) []byte {
	sum := pseudoSum(src, dst, proto, len(l4))
	binary.BigEndian.PutUint16(l4[csumOff:], 0)
	c := fold(sum + onesSum(l4))
	if c == 0 && proto == ProtoUDP {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(l4[csumOff:], c)
	if src.Is4() && !src.Is4In6() {
		h := make([]byte, 20)
		h[0] = 0x45
		binary.BigEndian.PutUint16(h[2:], uint16(20+len(l4)))
		binary.BigEndian.PutUint16(h[6:], 0x4000) // don't fragment
		h[8] = 64
		h[9] = proto
		s4, d4 := src.As4(), dst.Unmap().As4()
		copy(h[12:], s4[:])
		copy(h[16:], d4[:])
		binary.BigEndian.PutUint16(h[10:], fold(onesSum(h)))
		return append(h, l4...)
	}
	h := make([]byte, 40)
	h[0] = 0x60
	binary.BigEndian.PutUint16(h[4:], uint16(len(l4)))
	h[6] = proto
	h[7] = 64
	s16, d16 := src.As16(), dst.As16()
	copy(h[8:], s16[:])
	copy(h[24:], d16[:])
	return append(h, l4...)
}

func pseudoSum(src, dst netip.Addr, proto uint8, n int) uint32 {
	var b []byte
	if src.Is4() && !src.Is4In6() {
		s, d := src.As4(), dst.Unmap().As4()
		b = append(append(b, s[:]...), d[:]...)
		b = append(b, 0, proto, byte(n>>8), byte(n))
	} else {
		s, d := src.As16(), dst.As16()
		b = append(append(b, s[:]...), d[:]...)
		b = append(b, byte(n>>24), byte(n>>16), byte(n>>8), byte(n), 0, 0, 0, proto)
	}
	return onesSum(b)
}

func onesSum(b []byte) uint32 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	return s
}

func fold(s uint32) uint16 {
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return ^uint16(s)
}

// Packet is what ParsePacket understood of an IP packet.
type Packet struct {
	Src, Dst netip.Addr
	Proto    uint8
	// Ports are set for TCP and UDP.
	SrcPort, DstPort uint16
	// TCPFlags is set for TCP.
	TCPFlags uint8
	// ICMPType and ICMPCode are set for ICMP and ICMPv6.
	ICMPType, ICMPCode uint8
	// Inner is the start of the packet an ICMP error quotes.
	Inner []byte
}

func (p Packet) String() string {
	switch p.Proto {
	case ProtoTCP:
		return fmt.Sprintf("tcp %s -> %s flags %#x", netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort), p.TCPFlags)
	case ProtoUDP:
		return fmt.Sprintf("udp %s -> %s", netip.AddrPortFrom(p.Src, p.SrcPort), netip.AddrPortFrom(p.Dst, p.DstPort))
	case ProtoICMP, ProtoICMPv6:
		return fmt.Sprintf("icmp %s -> %s type %d code %d", p.Src, p.Dst, p.ICMPType, p.ICMPCode)
	}
	return fmt.Sprintf("proto %d %s -> %s", p.Proto, p.Src, p.Dst)
}

// ParsePacket reads the IP and transport headers of b.
func ParsePacket(b []byte) (Packet, error) {
	var p Packet
	var l4 []byte
	switch {
	case len(b) >= 20 && b[0]>>4 == 4:
		ihl := int(b[0]&0xf) * 4
		if ihl < 20 || len(b) < ihl {
			return p, errors.New("short IPv4 header")
		}
		p.Src = netip.AddrFrom4([4]byte(b[12:16]))
		p.Dst = netip.AddrFrom4([4]byte(b[16:20]))
		p.Proto = b[9]
		l4 = b[ihl:]
	case len(b) >= 40 && b[0]>>4 == 6:
		p.Src = netip.AddrFrom16([16]byte(b[8:24]))
		p.Dst = netip.AddrFrom16([16]byte(b[24:40]))
		p.Proto = b[6] // extension headers are not followed
		l4 = b[40:]
	default:
		return p, errors.New("not an IP packet")
	}
	switch p.Proto {
	case ProtoTCP:
		if len(l4) < 20 {
			return p, errors.New("short TCP header")
		}
		p.SrcPort, p.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
		p.TCPFlags = l4[13]
	case ProtoUDP:
		if len(l4) < 8 {
			return p, errors.New("short UDP header")
		}
		p.SrcPort, p.DstPort = binary.BigEndian.Uint16(l4), binary.BigEndian.Uint16(l4[2:])
	case ProtoICMP, ProtoICMPv6:
		if len(l4) < 8 {
			return p, errors.New("short ICMP header")
		}
		p.ICMPType, p.ICMPCode = l4[0], l4[1]
		p.Inner = l4[8:]
	}
	return p, nil
}
