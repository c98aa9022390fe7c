package netstack

import (
	"bytes"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// stackSeeds are FuzzStackPackets' seed inputs: what agents really send,
// and the malformed packets a hostile or broken agent could.
func stackSeeds() [][]byte {
	var seeds [][]byte
	add := func(mode fuzzMode, steps ...step) { seeds = append(seeds, fuzzInput(mode, steps...)) }
	pkt := func(p []byte) step { return step{0, p} }
	const (
		serve     = fuzzMode(tcpServe | udpServe<<2 | dnsAnswer<<4)
		lingering = 0x40
		tight     = 0x80
	)

	for _, fam := range []struct{ agent, gw, far netip.Addr }{
		{agentAddr, gwAddr, farAddr},
		{agentAddr6, gwAddr6, farAddr6},
	} {
		a := netip.AddrPortFrom(fam.agent, 40000)
		far := netip.AddrPortFrom(fam.far, 443)
		gw := netip.AddrPortFrom(fam.gw, 22)
		tcp := func(src, dst netip.AddrPort, seq uint32, flags header.TCPFlags, opts []byte, payload string) []byte {
			return ipPkt(src.Addr(), dst.Addr(), header.TCPProtocolNumber, tcpSeg(src, dst, seq, 0, flags, opts, []byte(payload)))
		}
		udp := func(src, dst netip.AddrPort, payload []byte) []byte {
			return ipPkt(src.Addr(), dst.Addr(), header.UDPProtocolNumber, udpDgram(src, dst, payload))
		}
		noTS := []byte{header.TCPOptionMSS, 4, 0x05, 0xb4, header.TCPOptionSACKPermitted, 2, header.TCPOptionWS, 3, 7}

		// A SYN to the outside and to the gateway, under every TCP handler.
		for m := fuzzMode(0); m < 4; m++ {
			add(m, pkt(tcp(a, far, 1000, header.TCPFlagSyn, synOpts(), "")))
			add(m|lingering, pkt(tcp(a, gw, 1000, header.TCPFlagSyn, nil, "")))
		}

		// A whole connection: handshake, request, FIN, last ACK.
		req := "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
		conn := func(dst netip.AddrPort, data string) []step {
			n := uint32(len(data))
			return []step{
				pkt(tcp(a, dst, 1000, header.TCPFlagSyn, noTS, "")),
				{stepWait | stepFixAck, tcp(a, dst, 1001, header.TCPFlagAck, nil, "")},
				{stepFixAck, tcp(a, dst, 1001, header.TCPFlagAck|header.TCPFlagPsh, nil, data)},
				{stepWait | stepFixAck, tcp(a, dst, 1001+n, header.TCPFlagAck|header.TCPFlagFin, nil, "")},
				{stepWait | stepFixAck, tcp(a, dst, 1002+n, header.TCPFlagAck, nil, "")},
			}
		}
		for _, m := range []fuzzMode{tcpServe, tcpAbort, tcpHalfClose} {
			add(m|lingering, conn(far, req)...)
		}
		add(tcpServe, conn(gw, req)...)
		// A segment as large as an IP packet can carry, after the handshake.
		big := string(bytes.Repeat([]byte("x"), maxPacket-header.IPv6MinimumSize-header.TCPMinimumSize-header.IPv4MinimumSize))
		add(tcpServe|lingering|tight, conn(far, big)...)
		// The agent resets its connection, then sends on it.
		c := conn(far, req)
		add(tcpServe|lingering, c[0], c[1], step{stepFixAck, tcp(a, far, 1001, header.TCPFlagRst|header.TCPFlagAck, nil, "")}, c[2])

		// Odd flags and options, segments of no connection.
		for _, fl := range []header.TCPFlags{
			header.TCPFlagSyn | header.TCPFlagFin, header.TCPFlagSyn | header.TCPFlagRst,
			header.TCPFlagSyn | header.TCPFlagAck, header.TCPFlagRst, header.TCPFlagAck,
			header.TCPFlagAck | header.TCPFlagPsh, header.TCPFlagFin, 0, 0xff,
		} {
			add(serve, pkt(tcp(a, far, 1000, fl, nil, "data")))
		}
		for _, opts := range [][]byte{
			{header.TCPOptionMSS, 0},                           // zero option length
			{header.TCPOptionMSS, 40, 1, 2},                    // longer than the header
			{header.TCPOptionWS, 3, 200},                       // window scale past 14
			{header.TCPOptionMSS, 4, 0, 0},                     // MSS 0
			{header.TCPOptionSACK, 10, 0, 0, 0, 1, 0, 0, 0, 2}, // SACK blocks on a SYN
			{header.TCPOptionTS, 9, 0, 0, 0, 1},
			bytes.Repeat([]byte{header.TCPOptionNOP}, 40),
		} {
			add(serve|lingering, pkt(tcp(a, far, 1000, header.TCPFlagSyn, opts, "")))
		}
		// A SYN flood past the in-flight limit.
		var flood []step
		for p := uint16(0); p < 8; p++ {
			flood = append(flood, pkt(tcp(netip.AddrPortFrom(fam.agent, 41000+p), far, 1000, header.TCPFlagSyn, nil, "")))
		}
		add(tcpServe|tight, flood...)
		add(tcpReject, flood...)
		// A SYN retransmitted while the first is being decided.
		add(tcpServe|lingering, flood[0], flood[0], flood[0])
		// A SYN with a bad checksum, and one with data.
		bad := tcp(a, far, 1000, header.TCPFlagSyn, nil, "")
		bad[len(bad)-3] ^= 0xff
		add(tcpServe, pkt(bad))
		add(tcpServe|lingering, pkt(tcp(a, far, 1000, header.TCPFlagSyn, nil, "early data")))

		// UDP: DNS to the gateway and elsewhere, other ports, empty and
		// as large as a packet can be, under every handler.
		dns := []byte("\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01")
		for m := fuzzMode(0); m < 64; m += 5 {
			add(m,
				pkt(udp(a, netip.AddrPortFrom(fam.gw, 53), dns)),
				pkt(udp(a, netip.AddrPortFrom(fam.far, 53), dns)),
				pkt(udp(a, netip.AddrPortFrom(fam.far, 9999), []byte("hello"))),
				pkt(udp(a, netip.AddrPortFrom(fam.gw, 123), nil)),
			)
		}
		hdr := header.IPv4MinimumSize
		if fam.agent.Is6() {
			hdr = header.IPv6MinimumSize
		}
		huge := make([]byte, maxPacket-hdr-header.UDPMinimumSize)
		add(serve|lingering, pkt(udp(a, netip.AddrPortFrom(fam.far, 9999), huge)))
		add(serve|dnsAnswerLater<<4, pkt(udp(a, netip.AddrPortFrom(fam.far, 53), huge)))
		// A second datagram of a flow that was accepted.
		d := udp(a, netip.AddrPortFrom(fam.far, 9999), []byte("one"))
		add(serve|lingering, pkt(d), step{stepWait, d})
		// UDP length field longer and shorter than the datagram.
		long := udp(a, netip.AddrPortFrom(fam.far, 9999), []byte("hello"))
		header.UDP(long[hdr:]).SetLength(200)
		short := udp(a, netip.AddrPortFrom(fam.far, 53), []byte("hello"))
		header.UDP(short[hdr:]).SetLength(4)
		add(serve, pkt(long), pkt(short))
		// No UDP checksum: allowed on IPv4, not on IPv6.
		zero := udp(a, netip.AddrPortFrom(fam.far, 53), dns)
		header.UDP(zero[hdr:]).SetChecksum(0)
		add(serve, pkt(zero))

		// Pings to the gateway (answered) and elsewhere (dropped), one as
		// large as a packet can be, whose reply must be fragmented.
		add(serve,
			pkt(echo(fam.agent, fam.gw, "ping")),
			pkt(echo(fam.agent, fam.far, "ping")),
			pkt(echo(fam.agent, fam.gw, string(make([]byte, maxPacket-hdr-8)))),
		)

		// Truncations of a valid SYN at every interesting length.
		syn := tcp(a, far, 1000, header.TCPFlagSyn, synOpts(), "")
		for _, n := range []int{1, 4, hdr - 1, hdr, hdr + 1, hdr + 19, len(syn) - 1} {
			add(serve, pkt(syn[:n]))
		}
		// Length fields that overstate the packet.
		over := bytes.Clone(syn)
		if fam.agent.Is6() {
			header.IPv6(over).SetPayloadLength(1000)
		} else {
			header.IPv4(over).SetTotalLength(1000)
		}
		add(serve, pkt(over))
		// A TCP data offset past the segment.
		off := bytes.Clone(syn)
		off[hdr+12] = 0xf0
		add(serve, pkt(off))
	}

	// IPv4 only: header checksum, header length, options, fragments.
	a4 := netip.AddrPortFrom(agentAddr, 40000)
	far4 := netip.AddrPortFrom(farAddr, 9999)
	dns4 := netip.AddrPortFrom(farAddr, 53)
	syn4 := tcpSYN(a4, netip.AddrPortFrom(farAddr, 443))
	badsum := bytes.Clone(syn4)
	badsum[10] ^= 0xff
	add(serve, pkt(badsum))
	for _, ihl := range []byte{0x40, 0x44, 0x46, 0x4f} {
		p := bytes.Clone(syn4)
		p[0] = ihl
		add(serve, pkt(p))
	}
	for _, opts := range [][]byte{
		{1, 1, 1, 0},                           // NOP, NOP, NOP, EOL
		{7, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0},     // record route
		{68, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0}, // timestamp
		{148, 4, 0, 0},                         // router alert
		{131, 7, 4, 198, 18, 0, 9},             // loose source route
		{137, 7, 4, 198, 18, 0, 9},             // strict source route
		{7, 0},                                 // zero length
		{68, 40, 5},                            // longer than the header
		{7, 3, 1},                              // record route pointer before itself
	} {
		h := v4Hdr{opts: opts}
		add(serve,
			pkt(h.wrap(a4.Addr(), far4.Addr(), header.UDPProtocolNumber, udpDgram(a4, far4, []byte("opt")))),
			pkt(h.wrap(agentAddr, gwAddr, header.ICMPv4ProtocolNumber, icmpMsg(agentAddr, gwAddr, uint8(header.ICMPv4Echo), 0, []byte{0, 1, 0, 1}))),
		)
	}
	// A datagram in three fragments, in order, reversed, overlapping,
	// duplicated, and only its first fragment.
	for _, dst := range []netip.AddrPort{far4, dns4} {
		dgram := udpDgram(a4, dst, bytes.Repeat([]byte("fragment"), 4))
		frag := func(off, end int, more bool) step {
			h := v4Hdr{id: 77, fragOff: uint16(off)}
			if more {
				h.flags = header.IPv4FlagMoreFragments
			}
			return pkt(h.wrap(a4.Addr(), dst.Addr(), header.UDPProtocolNumber, dgram[off:end]))
		}
		first, middle, last := frag(0, 16, true), frag(16, 32, true), frag(32, len(dgram), false)
		add(serve, first, middle, last)
		add(serve, last, middle, first)
		add(serve, first, frag(8, 24, true), frag(8, 32, true), last)
		add(serve, first, first, middle, middle, last)
		add(serve, first)
	}
	// A fragment that would reassemble past 64 KiB, and a fragmented SYN.
	add(serve, pkt(v4Hdr{id: 9, fragOff: 65528, flags: header.IPv4FlagMoreFragments}.wrap(agentAddr, farAddr, header.UDPProtocolNumber, make([]byte, 64))))
	seg := tcpSeg(a4, netip.AddrPortFrom(farAddr, 443), 1000, 0, header.TCPFlagSyn, synOpts(), nil)
	add(serve|lingering,
		pkt(v4Hdr{id: 5, flags: header.IPv4FlagMoreFragments}.wrap(agentAddr, farAddr, header.TCPProtocolNumber, seg[:8])),
		pkt(v4Hdr{id: 5, fragOff: 8}.wrap(agentAddr, farAddr, header.TCPProtocolNumber, seg[8:])),
	)
	// ICMP errors quoting a flow, timestamp request, IGMP, broadcast and
	// multicast, spoofed and martian sources.
	quote := syn4[:header.IPv4MinimumSize+8]
	add(serve|lingering,
		pkt(syn4),
		pkt(ip4(farAddr, agentAddr, header.ICMPv4ProtocolNumber, icmpMsg(farAddr, agentAddr, uint8(header.ICMPv4DstUnreachable), uint8(header.ICMPv4FragmentationNeeded), append([]byte{0, 0, 2, 0}, quote...)))),
		pkt(ip4(agentAddr, farAddr, header.ICMPv4ProtocolNumber, icmpMsg(agentAddr, farAddr, uint8(header.ICMPv4DstUnreachable), uint8(header.ICMPv4PortUnreachable), append([]byte{0, 0, 0, 0}, quote...)))),
	)
	add(serve, pkt(ip4(agentAddr, gwAddr, header.ICMPv4ProtocolNumber, icmpMsg(agentAddr, gwAddr, uint8(header.ICMPv4Timestamp), 0, make([]byte, 16)))))
	add(serve, pkt(ip4(agentAddr, netip.MustParseAddr("224.0.0.1"), 2, []byte{0x11, 0x64, 0xee, 0x9b, 0, 0, 0, 0})))
	for _, dst := range []string{"255.255.255.255:67", "100.96.255.255:137", "224.0.0.251:5353", "127.0.0.1:53", "0.0.0.0:9"} {
		d := netip.MustParseAddrPort(dst)
		add(serve, pkt(ip4(agentAddr, d.Addr(), header.UDPProtocolNumber, udpDgram(a4, d, []byte("x")))))
	}
	for _, src := range []string{"100.96.0.1", "0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1", "198.18.0.2"} {
		s := netip.AddrPortFrom(netip.MustParseAddr(src), 40000)
		add(serve|lingering,
			pkt(tcpSYN(s, netip.AddrPortFrom(farAddr, 443))),
			pkt(ip4(s.Addr(), farAddr, header.UDPProtocolNumber, udpDgram(s, far4, []byte("x")))),
			pkt(echo(s.Addr(), gwAddr, "ping")),
		)
	}

	// IPv6 only: extension headers, fragments, NDP, MLD, odd addresses.
	a6 := netip.AddrPortFrom(agentAddr6, 40000)
	far6 := netip.AddrPortFrom(farAddr6, 9999)
	dns6 := netip.AddrPortFrom(farAddr6, 53)
	u6 := udpDgram(a6, far6, []byte("ext"))
	routerAlert := []byte{5, 2, 0, 0}
	unknownSkip := []byte{0x1e, 2, 0, 0} // unknown option: skip it
	unknownDrop := []byte{0x9e, 2, 0, 0} // unknown option: drop and send an ICMP error
	jumbo := []byte{0xc2, 4, 0, 1, 0, 0}
	for _, exts := range [][]ext6{
		{optsExt6(header.IPv6HopByHopOptionsExtHdrIdentifier, routerAlert)},
		{optsExt6(header.IPv6HopByHopOptionsExtHdrIdentifier, unknownSkip), optsExt6(header.IPv6DestinationOptionsExtHdrIdentifier, unknownSkip)},
		{optsExt6(header.IPv6DestinationOptionsExtHdrIdentifier, unknownDrop)},
		{optsExt6(header.IPv6HopByHopOptionsExtHdrIdentifier, jumbo)},
		{optsExt6(header.IPv6DestinationOptionsExtHdrIdentifier, nil), optsExt6(header.IPv6HopByHopOptionsExtHdrIdentifier, nil)}, // hop-by-hop not first
		{routingExt6(0, 1, farAddr6)},
		{routingExt6(2, 1, farAddr6)},
		{routingExt6(4, 0)},
		{fragExt6(0, false, 1)}, // atomic fragment
		{fragExt6(0, false, 2), fragExt6(0, false, 3)},
		{optsExt6(header.IPv6HopByHopOptionsExtHdrIdentifier, routerAlert), routingExt6(0, 0, farAddr6), fragExt6(0, false, 4), optsExt6(header.IPv6DestinationOptionsExtHdrIdentifier, nil)},
	} {
		add(serve, pkt(ip6(agentAddr6, farAddr6, header.UDPProtocolNumber, u6, exts...)))
	}
	add(serve, pkt(ip6(agentAddr6, farAddr6, header.TCPProtocolNumber, tcpSeg(a6, netip.AddrPortFrom(farAddr6, 443), 1000, 0, header.TCPFlagSyn, nil, nil),
		optsExt6(header.IPv6HopByHopOptionsExtHdrIdentifier, unknownSkip))))
	add(serve, pkt(ip6(agentAddr6, farAddr6, 59, []byte("after no next header"))))
	add(serve, pkt(ip6(agentAddr6, farAddr6, 51, make([]byte, 24)))) // authentication header
	add(serve, pkt(ip6(agentAddr6, farAddr6, 253, make([]byte, 8))))
	for _, dst := range []netip.AddrPort{far6, dns6} {
		dgram := udpDgram(a6, dst, bytes.Repeat([]byte("fragment"), 4))
		frag := func(off, end int, more bool) step {
			return pkt(ip6(agentAddr6, dst.Addr(), header.UDPProtocolNumber, dgram[off:end], fragExt6(uint16(off), more, 99)))
		}
		first, middle, last := frag(0, 16, true), frag(16, 32, true), frag(32, len(dgram), false)
		add(serve, first, middle, last)
		add(serve, last, middle, first)
		add(serve, first, frag(8, 24, true), frag(8, 32, true), last)
		add(serve, first)
	}
	add(serve, pkt(ip6(agentAddr6, farAddr6, header.UDPProtocolNumber, make([]byte, 64), fragExt6(65528, true, 7))))
	// Neighbour and router solicitation, MLD, echo to multicast.
	ns := append([]byte{0, 0, 0, 0}, gwAddr6.AsSlice()...)
	ns = append(ns, 1, 1, 0x02, 0, 0, 0, 0, 2) // source link-layer address option
	snm := netip.MustParseAddr("ff02::1:ff00:1")
	allRouters := netip.MustParseAddr("ff02::2")
	ll := netip.MustParseAddr("fe80::2")
	add(serve,
		pkt(ip6(agentAddr6, snm, header.ICMPv6ProtocolNumber, icmpMsg(agentAddr6, snm, uint8(header.ICMPv6NeighborSolicit), 0, ns))),
		pkt(ip6(agentAddr6, gwAddr6, header.ICMPv6ProtocolNumber, icmpMsg(agentAddr6, gwAddr6, uint8(header.ICMPv6NeighborSolicit), 0, ns))),
		pkt(ip6(netip.IPv6Unspecified(), snm, header.ICMPv6ProtocolNumber, icmpMsg(netip.IPv6Unspecified(), snm, uint8(header.ICMPv6NeighborSolicit), 0, ns[:20]))),
		pkt(ip6(ll, allRouters, header.ICMPv6ProtocolNumber, icmpMsg(ll, allRouters, uint8(header.ICMPv6RouterSolicit), 0, make([]byte, 4)))),
		pkt(ip6(ll, allRouters, header.ICMPv6ProtocolNumber, icmpMsg(ll, allRouters, uint8(header.ICMPv6RouterAdvert), 0, make([]byte, 12)))),
		pkt(ip6(ll, netip.MustParseAddr("ff02::16"), header.ICMPv6ProtocolNumber, icmpMsg(ll, netip.MustParseAddr("ff02::16"), 143, 0, make([]byte, 4)),
			optsExt6(header.IPv6HopByHopOptionsExtHdrIdentifier, routerAlert))),
		pkt(echo(agentAddr6, netip.MustParseAddr("ff02::1"), "ping")),
	)
	quote6 := ip6(agentAddr6, farAddr6, header.TCPProtocolNumber, tcpSeg(a6, netip.AddrPortFrom(farAddr6, 443), 1000, 0, header.TCPFlagSyn, nil, nil))
	add(serve|lingering,
		pkt(quote6),
		pkt(ip6(farAddr6, agentAddr6, header.ICMPv6ProtocolNumber, icmpMsg(farAddr6, agentAddr6, uint8(header.ICMPv6PacketTooBig), 0, append([]byte{0, 0, 0x01, 0x00}, quote6...)))),
	)
	for _, src := range []string{"fd63:6c61:776e:1::1", "::", "::1", "ff02::1", "::ffff:100.96.0.2", "fe80::1"} {
		s := netip.AddrPortFrom(netip.MustParseAddr(src), 40000)
		for _, d := range []netip.AddrPort{netip.AddrPortFrom(farAddr6, 443), netip.MustParseAddrPort("[::ffff:8.8.8.8]:53"), netip.MustParseAddrPort("[::1]:53")} {
			add(serve|lingering,
				pkt(ip6(s.Addr(), d.Addr(), header.TCPProtocolNumber, tcpSeg(s, d, 1000, 0, header.TCPFlagSyn, nil, nil))),
				pkt(ip6(s.Addr(), d.Addr(), header.UDPProtocolNumber, udpDgram(s, d, []byte("x")))),
			)
		}
	}

	// Not IP at all.
	add(serve, pkt(nil))
	for _, b := range []byte{0x00, 0x50, 0x70, 0xf0} {
		add(serve, pkt([]byte{b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}))
	}
	add(serve, pkt(make([]byte, maxPacket)))
	return seeds
}
