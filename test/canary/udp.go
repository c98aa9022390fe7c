package main

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"

	"github.com/clawnet/clawnet/test/canary/canarylog"
)

// listenUDPEcho binds one socket per family on the wildcard address and asks
// the kernel for each datagram's destination: the log must say which of the
// namespace's addresses a datagram reached, and the reply must come from
// that same address or a connected client socket would drop it.
func (s *server) listenUDPEcho() error {
	c4, err := net.ListenPacket("udp4", s.addr(portEcho))
	if err != nil {
		return fmt.Errorf("listen udp4 echo: %w", err)
	}
	if !s.own(c4) {
		return errors.New("server closed")
	}
	p4 := ipv4.NewPacketConn(c4)
	if err := p4.SetControlMessage(ipv4.FlagDst, true); err != nil {
		return fmt.Errorf("udp4 echo: ask for destination addresses: %w", err)
	}
	// Go binds "udp6" sockets IPv6-only, so this does not clash with c4.
	c6, err := net.ListenPacket("udp6", s.addr(portEcho))
	if err != nil {
		return fmt.Errorf("listen udp6 echo: %w", err)
	}
	if !s.own(c6) {
		return errors.New("server closed")
	}
	p6 := ipv6.NewPacketConn(c6)
	if err := p6.SetControlMessage(ipv6.FlagDst, true); err != nil {
		return fmt.Errorf("udp6 echo: ask for destination addresses: %w", err)
	}
	s.spawn(func() {
		buf := make([]byte, 1<<16)
		for {
			n, cm, src, err := p4.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			var dst net.IP
			if cm != nil {
				dst = cm.Dst
			}
			_, werr := p4.WriteTo(buf[:n], &ipv4.ControlMessage{Src: dst}, src)
			s.logDatagram(buf[:n], src, dst, portEcho+s.offset, werr)
		}
	})
	s.spawn(func() {
		buf := make([]byte, 1<<16)
		for {
			n, cm, src, err := p6.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			var dst net.IP
			if cm != nil {
				dst = cm.Dst
			}
			_, werr := p6.WriteTo(buf[:n], &ipv6.ControlMessage{Src: dst}, src)
			s.logDatagram(buf[:n], src, dst, portEcho+s.offset, werr)
		}
	})
	return nil
}

func (s *server) logDatagram(b []byte, src net.Addr, dst net.IP, port int, werr error) {
	e := canarylog.Entry{
		Service: canarylog.ServiceUDPEcho, Event: canarylog.EventDatagram, Proto: "udp",
		Remote: src.String(), Bytes: int64(len(b)), SHA256: canarylog.Digest(b),
	}
	if werr == nil {
		e.BytesOut = int64(len(b))
	} else {
		e.Error = werr.Error()
	}
	if a, ok := netip.AddrFromSlice(dst); ok {
		e.Local = netip.AddrPortFrom(a.Unmap(), uint16(port)).String()
	}
	s.log.Log(e)
}
