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

// hostAddrs knows the gateway host's own addresses, which no agent may reach
// whatever its policy says. It refreshes them in the background, since
// interfaces come and go.
type hostAddrs struct {
	set  atomic.Pointer[map[netip.Addr]struct{}]
	stop chan struct{}
	done chan struct{}
}

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
	set := map[netip.Addr]struct{}{}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					set[ip.Unmap()] = struct{}{}
				}
			}
		}
	}
	h.set.Store(&set)
}

func (h *hostAddrs) contains(a netip.Addr) bool {
	_, ok := (*h.set.Load())[a.Unmap()]
	return ok
}

func (h *hostAddrs) close() {
	close(h.stop)
	<-h.done
}
