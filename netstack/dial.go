package netstack

import (
	"context"
	"fmt"
	"net/netip"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// DialTCP opens a connection into the agent, from src to dst (an address
// and port of the agent's): how the gateway delivers an inbound flow it has
// decided. The stack spoofs, so src can be any address; the agent's server
// sees it as the peer. buffer, when positive, fixes the connection's send
// and receive buffers as TCPRequest.Buffer does.
func (ns *Stack) DialTCP(ctx context.Context, src, dst netip.AddrPort, buffer int) (*TCPConn, error) {
	proto := ipv4.ProtocolNumber
	if dst.Addr().Is6() && !dst.Addr().Is4In6() {
		proto = ipv6.ProtocolNumber
	}
	var wq waiter.Queue
	ep, terr := ns.s.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("new endpoint: %v", terr)
	}
	entry, notify := waiter.NewChannelEntry(waiter.WritableEvents)
	wq.EventRegister(&entry)
	defer wq.EventUnregister(&entry)
	if terr := ep.Bind(tcpip.FullAddress{Addr: tcpip.AddrFromSlice(src.Addr().Unmap().AsSlice()), Port: src.Port()}); terr != nil {
		ep.Close()
		return nil, fmt.Errorf("bind %s: %v", src, terr)
	}
	if buffer > 0 {
		ep.SocketOptions().SetReceiveBufferSize(int64(buffer), true)
		ep.SocketOptions().SetSendBufferSize(int64(buffer), true)
	}
	terr = ep.Connect(tcpip.FullAddress{Addr: tcpip.AddrFromSlice(dst.Addr().Unmap().AsSlice()), Port: dst.Port()})
	if _, started := terr.(*tcpip.ErrConnectStarted); started {
		select {
		case <-ctx.Done():
			ep.Close()
			return nil, ctx.Err()
		case <-notify:
		}
		terr = ep.LastError()
	}
	if terr != nil {
		ep.Close()
		return nil, fmt.Errorf("connect to %s: %v", dst, terr)
	}
	ep.SocketOptions().SetKeepAlive(true)
	return &TCPConn{TCPConn: gonet.NewTCPConn(&wq, ep), ep: ep, wq: &wq}, nil
}

// DialUDP opens a UDP flow into the agent, from src (any address: the
// stack spoofs; port 0 picks one) to dst, an address and port of the
// agent's.
func (ns *Stack) DialUDP(src, dst netip.AddrPort) (*gonet.UDPConn, error) {
	proto := ipv4.ProtocolNumber
	if dst.Addr().Is6() && !dst.Addr().Is4In6() {
		proto = ipv6.ProtocolNumber
	}
	laddr := tcpip.FullAddress{Addr: tcpip.AddrFromSlice(src.Addr().Unmap().AsSlice()), Port: src.Port()}
	raddr := tcpip.FullAddress{Addr: tcpip.AddrFromSlice(dst.Addr().Unmap().AsSlice()), Port: dst.Port()}
	c, err := gonet.DialUDP(ns.s, &laddr, &raddr, proto)
	if err != nil {
		return nil, fmt.Errorf("udp to %s from %s: %w", dst, src, err)
	}
	return c, nil
}
