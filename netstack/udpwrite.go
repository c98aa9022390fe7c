package netstack

import (
	"errors"
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// WriteUDP sends one datagram to the agent, from src to dst, straight onto
// its link. The gateway answers DNS this way: no endpoint, goroutine or
// state per query.
func (ns *Stack) WriteUDP(src, dst netip.AddrPort, payload []byte) error {
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	if src.Addr().Is4() != dst.Addr().Is4() {
		return errors.New("write udp: mixed address families")
	}
	ipLen := header.IPv4MinimumSize
	if src.Addr().Is6() {
		ipLen = header.IPv6MinimumSize
	}
	total := ipLen + header.UDPMinimumSize + len(payload)
	if total > int(ns.ep.mtu) || total > maxPacket {
		return fmt.Errorf("write udp: %d bytes exceed the link MTU %d", total, ns.ep.mtu)
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	pkt := (*bp)[:total]
	sa := tcpip.AddrFromSlice(src.Addr().AsSlice())
	da := tcpip.AddrFromSlice(dst.Addr().AsSlice())
	udpLen := uint16(header.UDPMinimumSize + len(payload))
	if src.Addr().Is4() {
		ip := header.IPv4(pkt)
		ip.Encode(&header.IPv4Fields{
			TotalLength: uint16(total), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
			SrcAddr: sa, DstAddr: da,
		})
		ip.SetChecksum(^ip.CalculateChecksum())
	} else {
		header.IPv6(pkt).Encode(&header.IPv6Fields{
			PayloadLength: udpLen, TransportProtocol: header.UDPProtocolNumber, HopLimit: 64,
			SrcAddr: sa, DstAddr: da,
		})
	}
	u := header.UDP(pkt[ipLen:])
	u.Encode(&header.UDPFields{SrcPort: src.Port(), DstPort: dst.Port(), Length: udpLen})
	copy(pkt[ipLen+header.UDPMinimumSize:], payload)
	sum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, sa, da, udpLen)
	sum = checksum.Checksum(payload, sum)
	// A computed checksum of zero is sent as all ones: zero means "none",
	// which IPv6 forbids for UDP (RFC 8200 8.1) and the receiver drops.
	if cs := ^u.CalculateChecksum(sum); cs != 0 {
		u.SetChecksum(cs)
	} else {
		u.SetChecksum(0xffff)
	}

	ns.ep.writeMu.Lock()
	_, err := ns.ep.dev.Write([][]byte{pkt}, 0)
	ns.ep.writeMu.Unlock()
	if err != nil {
		return fmt.Errorf("write udp: %w", err)
	}
	ns.Stats.PacketsOut.Add(1)
	ns.Stats.BytesOut.Add(uint64(total))
	return nil
}
