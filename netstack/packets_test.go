package netstack

import (
	"encoding/binary"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// Packet builders for tests that need more than stack_test.go's IPv4
// helpers: either family, any transport, IPv4 options and fragments, IPv6
// extension headers. Transport checksums are computed over the final
// source and destination, so a builder's output is what a correct kernel
// would send unless a test breaks it on purpose.

var (
	agentAddr6 = netip.MustParseAddr("fd63:6c61:776e:1::2")
	gwAddr6    = netip.MustParseAddr("fd63:6c61:776e:1::1")
	farAddr6   = netip.MustParseAddr("2001:db8::2")
)

func tcpipAddr(a netip.Addr) tcpip.Address { return tcpip.AddrFromSlice(a.AsSlice()) }

// l4Checksum sets the checksum of the transport header at the start of b,
// sent from src to dst.
func l4Checksum(proto tcpip.TransportProtocolNumber, src, dst netip.Addr, b []byte) {
	var off int
	switch proto {
	case header.TCPProtocolNumber:
		off = 16
	case header.UDPProtocolNumber:
		off = 6
	case header.ICMPv4ProtocolNumber, header.ICMPv6ProtocolNumber:
		off = 2
	default:
		return
	}
	if len(b) < off+2 {
		return
	}
	b[off], b[off+1] = 0, 0
	var sum uint16
	if proto != header.ICMPv4ProtocolNumber {
		sum = header.PseudoHeaderChecksum(proto, tcpipAddr(src), tcpipAddr(dst), uint16(len(b)))
	}
	c := ^checksum.Checksum(b, sum)
	if proto == header.UDPProtocolNumber && c == 0 {
		c = 0xffff
	}
	binary.BigEndian.PutUint16(b[off:], c)
}

// tcpSeg builds a TCP segment (header, options padded to 4 bytes, payload).
func tcpSeg(src, dst netip.AddrPort, seq, ack uint32, flags header.TCPFlags, opts, payload []byte) []byte {
	for len(opts)%4 != 0 {
		opts = append(opts, header.TCPOptionNOP)
	}
	hl := header.TCPMinimumSize + len(opts)
	b := make([]byte, hl+len(payload))
	header.TCP(b).Encode(&header.TCPFields{
		SrcPort: src.Port(), DstPort: dst.Port(), SeqNum: seq, AckNum: ack,
		DataOffset: uint8(hl), Flags: flags, WindowSize: 65535,
	})
	copy(b[header.TCPMinimumSize:], opts)
	copy(b[hl:], payload)
	l4Checksum(header.TCPProtocolNumber, src.Addr(), dst.Addr(), b)
	return b
}

// udpDgram builds a UDP header and payload.
func udpDgram(src, dst netip.AddrPort, payload []byte) []byte {
	b := make([]byte, header.UDPMinimumSize+len(payload))
	header.UDP(b).Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: uint16(len(b))})
	copy(b[header.UDPMinimumSize:], payload)
	l4Checksum(header.UDPProtocolNumber, src.Addr(), dst.Addr(), b)
	return b
}

// icmpMsg builds an ICMPv4 or ICMPv6 message (by the family of src) whose
// body follows the 4-byte type, code and checksum.
func icmpMsg(src, dst netip.Addr, typ, code uint8, body []byte) []byte {
	b := make([]byte, 4+len(body))
	b[0], b[1] = typ, code
	copy(b[4:], body)
	proto := header.ICMPv4ProtocolNumber
	if src.Is6() {
		proto = header.ICMPv6ProtocolNumber
	}
	l4Checksum(proto, src, dst, b)
	return b
}

// echo builds an ICMP or ICMPv6 echo request.
func echo(src, dst netip.Addr, data string) []byte {
	body := append([]byte{0, 7, 0, 1}, data...) // ident 7, sequence 1
	if src.Is6() {
		return ip6(src, dst, header.ICMPv6ProtocolNumber, icmpMsg(src, dst, uint8(header.ICMPv6EchoRequest), 0, body))
	}
	return ip4(src, dst, header.ICMPv4ProtocolNumber, icmpMsg(src, dst, uint8(header.ICMPv4Echo), 0, body))
}

// v4Hdr describes an IPv4 header beyond its addresses and protocol.
type v4Hdr struct {
	id      uint16
	flags   uint8  // header.IPv4FlagMoreFragments, header.IPv4FlagDontFragment
	fragOff uint16 // in bytes, a multiple of 8
	opts    []byte // raw options, padded to 4 bytes with EOL
}

// ip4 wraps a transport payload in a plain IPv4 header.
func ip4(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, payload []byte) []byte {
	return v4Hdr{}.wrap(src, dst, proto, payload)
}

func (h v4Hdr) wrap(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, payload []byte) []byte {
	opts := h.opts
	for len(opts)%4 != 0 {
		opts = append(opts, 0)
	}
	hl := header.IPv4MinimumSize + len(opts)
	b := make([]byte, hl+len(payload))
	ip := header.IPv4(b)
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(b)), ID: h.id, Flags: h.flags, FragmentOffset: h.fragOff,
		TTL: 64, Protocol: uint8(proto), SrcAddr: tcpipAddr(src), DstAddr: tcpipAddr(dst),
	})
	ip.SetHeaderLength(uint8(hl))
	copy(b[header.IPv4MinimumSize:], opts)
	copy(b[hl:], payload)
	ip.SetChecksum(^ip.CalculateChecksum())
	return b
}

// ip6 wraps a transport payload in an IPv6 header, after the given
// extension headers (see ext6).
func ip6(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, payload []byte, exts ...ext6) []byte {
	n := header.IPv6MinimumSize + len(payload)
	for _, e := range exts {
		n += len(e.b)
	}
	b := make([]byte, n)
	first := uint8(proto)
	if len(exts) > 0 {
		first = uint8(exts[0].id)
	}
	header.IPv6(b).Encode(&header.IPv6Fields{
		PayloadLength: uint16(n - header.IPv6MinimumSize), TransportProtocol: tcpip.TransportProtocolNumber(first),
		HopLimit: 64, SrcAddr: tcpipAddr(src), DstAddr: tcpipAddr(dst),
	})
	off := header.IPv6MinimumSize
	for i, e := range exts {
		copy(b[off:], e.b)
		if i+1 < len(exts) {
			b[off] = uint8(exts[i+1].id)
		} else {
			b[off] = uint8(proto)
		}
		off += len(e.b)
	}
	copy(b[off:], payload)
	return b
}

// ext6 is one IPv6 extension header; ip6 fills in its next-header byte.
type ext6 struct {
	id header.IPv6ExtensionHeaderIdentifier
	b  []byte
}

// optsExt6 builds a hop-by-hop or destination options header, padding the
// options with PadN to a multiple of 8 bytes.
func optsExt6(id header.IPv6ExtensionHeaderIdentifier, opts []byte) ext6 {
	b := append([]byte{0, 0}, opts...)
	if pad := (8 - len(b)%8) % 8; pad == 1 {
		b = append(b, 0) // Pad1
	} else if pad > 1 {
		b = append(b, 1, byte(pad-2))
		b = append(b, make([]byte, pad-2)...)
	}
	b[1] = byte(len(b)/8 - 1)
	return ext6{id, b}
}

// fragExt6 builds an IPv6 fragment header; off is in bytes, a multiple of 8.
func fragExt6(off uint16, more bool, id uint32) ext6 {
	b := make([]byte, header.IPv6FragmentHeaderSize)
	v := off &^ 7
	if more {
		v |= 1
	}
	binary.BigEndian.PutUint16(b[2:], v)
	binary.BigEndian.PutUint32(b[4:], id)
	return ext6{header.IPv6FragmentExtHdrIdentifier, b}
}

// routingExt6 builds a routing header of the given type through addrs.
func routingExt6(typ, segsLeft uint8, addrs ...netip.Addr) ext6 {
	b := make([]byte, 8, 8+16*len(addrs))
	b[1] = byte(2 * len(addrs))
	b[2], b[3] = typ, segsLeft
	for _, a := range addrs {
		b = append(b, a.AsSlice()...)
	}
	return ext6{header.IPv6RoutingExtHdrIdentifier, b}
}

// ipPkt wraps a transport payload in the header of src's family.
func ipPkt(src, dst netip.Addr, proto tcpip.TransportProtocolNumber, payload []byte) []byte {
	if src.Is6() {
		return ip6(src, dst, proto, payload)
	}
	return ip4(src, dst, proto, payload)
}

// synOpts are the options a Linux client puts on a SYN: MSS, SACK
// permitted, timestamps, window scale.
func synOpts() []byte {
	return []byte{
		header.TCPOptionMSS, 4, 0x05, 0xb4,
		header.TCPOptionSACKPermitted, 2,
		header.TCPOptionTS, 10, 0, 0, 0, 1, 0, 0, 0, 0,
		header.TCPOptionNOP,
		header.TCPOptionWS, 3, 7,
	}
}
