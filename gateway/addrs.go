package gateway

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// addrPool hands out agent addresses: the same host index in the IPv4 and the
// IPv6 prefix, so an agent's two addresses read alike. Index 1 is the
// gateway's.
type addrPool struct {
	v4, v6 netip.Prefix
	max    int

	mu   sync.Mutex
	used map[int]bool // guarded by mu
	next int          // guarded by mu
}

func newAddrPool(v4, v6 netip.Prefix) *addrPool {
	size := 1<<(32-v4.Bits()) - 2 // without network and broadcast
	return &addrPool{v4: v4.Masked(), v6: v6.Masked(), max: size, used: map[int]bool{}, next: 2}
}

// gateway returns the gateway's own addresses on every agent link.
func (p *addrPool) gateway() (netip.Addr, netip.Addr) {
	return nth(p.v4, 1), nth(p.v6, 1)
}

func (p *addrPool) get() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := 0; i < p.max; i++ {
		idx := p.next
		p.next++
		if p.next > p.max {
			p.next = 2
		}
		if !p.used[idx] {
			p.used[idx] = true
			return idx, nil
		}
	}
	return 0, fmt.Errorf("no free agent address in %s", p.v4)
}

func (p *addrPool) put(idx int) {
	p.mu.Lock()
	delete(p.used, idx)
	p.mu.Unlock()
}

func (p *addrPool) addrs(idx int) (netip.Prefix, netip.Prefix) {
	return netip.PrefixFrom(nth(p.v4, idx), p.v4.Bits()), netip.PrefixFrom(nth(p.v6, idx), p.v6.Bits())
}

// contains reports whether a is any agent's or the gateway's link address.
func (p *addrPool) contains(a netip.Addr) bool {
	a = a.Unmap()
	return p.v4.Contains(a) || p.v6.Contains(a)
}

// nth returns the address idx places after the prefix's first.
func nth(p netip.Prefix, idx int) netip.Addr {
	b := p.Addr().AsSlice()
	for i := len(b) - 1; i >= 0 && idx > 0; i-- {
		sum := int(b[i]) + idx&0xff
		b[i] = byte(sum)
		idx = idx>>8 + sum>>8
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// hostAddrs knows the gateway host's own addresses, and the network and
// broadcast addresses of every subnet the host is on: no agent may reach
// any of them whatever its policy says, since a datagram to a subnet's
// broadcast address reaches the host itself and every machine on that
// link. It refreshes them in the background, since interfaces come and go.
type hostAddrs struct {
	set  atomic.Pointer[map[netip.Addr]hostAddrKind]
	stop chan struct{}
	done chan struct{}
}

// hostAddrKind says why an address is in hostAddrs.
type hostAddrKind uint8

const (
	hostOwn       hostAddrKind = iota + 1 // assigned to one of the host's interfaces
	hostNetwork                           // the network address of a host subnet
	hostBroadcast                         // the broadcast address of a host subnet
)

func newHostAddrs(every time.Duration) *hostAddrs {
	h := &hostAddrs{stop: make(chan struct{}), done: make(chan struct{})}
	h.refresh()
	go func() {
		defer close(h.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-t.C:
				h.refresh()
			}
		}
	}()
	return h
}

func (h *hostAddrs) refresh() {
	var ps []netip.Prefix
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			n, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(n.IP)
			if !ok {
				continue
			}
			ones, _ := n.Mask.Size()
			ps = append(ps, netip.PrefixFrom(ip.Unmap(), ones))
		}
	}
	set := hostAddrSet(ps)
	h.set.Store(&set)
}

// hostAddrSet lists the addresses of the host's interface prefixes with
// the network and broadcast addresses of their subnets. Point-to-point
// subnets (/31, /32, /127, /128) have neither.
func hostAddrSet(ps []netip.Prefix) map[netip.Addr]hostAddrKind {
	set := make(map[netip.Addr]hostAddrKind, 3*len(ps))
	for _, p := range ps {
		if !p.IsValid() {
			continue
		}
		ip := p.Addr().WithZone("")
		if ip.BitLen()-p.Bits() >= 2 {
			if _, ok := set[p.Masked().Addr()]; !ok {
				set[p.Masked().Addr()] = hostNetwork
			}
			// IPv6 has no broadcast; its all-zero interface ID (the
			// subnet-router anycast) is the network address above.
			if ip.Is4() {
				if _, ok := set[lastAddr(p)]; !ok {
					set[lastAddr(p)] = hostBroadcast
				}
			}
		}
		set[ip] = hostOwn
	}
	return set
}

// lastAddr returns the highest address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// lookup says whether a is one of the host's addresses or a network or
// broadcast address of one of its subnets, and which.
func (h *hostAddrs) lookup(a netip.Addr) (hostAddrKind, bool) {
	if h == nil {
		return 0, false
	}
	k, ok := (*h.set.Load())[a.Unmap().WithZone("")]
	return k, ok
}

// contains reports whether a is one of the host's addresses, or a network
// or broadcast address of one of its subnets.
func (h *hostAddrs) contains(a netip.Addr) bool {
	_, ok := h.lookup(a)
	return ok
}

func (h *hostAddrs) close() {
	close(h.stop)
	<-h.done
}
