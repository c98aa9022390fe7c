package gateway

import (
	"io"
	"net"
	"net/netip"

	proxyproto "github.com/pires/go-proxyproto"
)

// PP2TypeClawnetPeer is the PROXY v2 TLV (in the range the spec leaves to
// applications) that carries the peer's identity as the gateway knows it:
// agent:NAME for another agent, host, or remote:ADDR. An agent's server
// can trust it where it could not trust a source address: only the gateway
// can open a connection into the agent.
const PP2TypeClawnetPeer proxyproto.PP2Type = 0xE0

// writeProxyHeader writes a PROXY v2 header for a connection from src to
// dst on behalf of peer.
func writeProxyHeader(w io.Writer, src, dst netip.AddrPort, peer string) error {
	h := proxyproto.HeaderProxyFromAddrs(2, net.TCPAddrFromAddrPort(unmapAP(src)), net.TCPAddrFromAddrPort(unmapAP(dst)))
	if err := h.SetTLVs([]proxyproto.TLV{{Type: PP2TypeClawnetPeer, Value: []byte(peer)}}); err != nil {
		return err
	}
	_, err := h.WriteTo(w)
	return err
}

func unmapAP(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
