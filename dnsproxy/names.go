package dnsproxy

import (
	"net/netip"
	"sync"
	"time"

	"github.com/clawnet/clawnet/policy"
)

// Bounds of one agent's name bindings. They are what an agent's DNS answers
// can make the gateway hold, whatever the upstream's TTLs say.
const (
	// bindMinTTL is the shortest binding (and the smallest TTL the agent is
	// told): a 0-TTL answer still lets the agent connect to what it got.
	bindMinTTL = 30 * time.Second
	// bindMaxTTL is the longest binding (and TTL the agent is told), so an
	// address the name has moved away from is not trusted for days.
	bindMaxTTL = time.Hour
	// bindGrace outlives the TTL the agent was told: it receives the answer
	// a moment after the binding is made, and may use its cached copy until
	// the last second of the TTL.
	bindGrace = 10 * time.Second
	// MaxBindingsPerName bounds the addresses one name holds, and one
	// answer returns; the oldest goes first (a CDN rotating its addresses
	// keeps its newest).
	MaxBindingsPerName = 32
	// maxBindingsPerAgent bounds one agent's table; the binding refreshed
	// longest ago goes first.
	maxBindingsPerAgent = 2048
)

// clampTTL bounds a DNS TTL to what bindings and answers use.
func clampTTL(ttl time.Duration) time.Duration {
	return min(max(ttl, bindMinTTL), bindMaxTTL)
}

// binding is one name → address fact from one of the agent's DNS answers.
type binding struct {
	name       string // normalized, as the policy matches it
	ip         netip.Addr
	expires    time.Time
	prev, next *binding // recency list: head is the least recently bound
}

type bindKey struct {
	name string
	ip   netip.Addr
}

// NameTable binds IP → names for one agent, from that agent's own DNS
// answers, each for its TTL. It is what lets a flow to an address be
// allowed by a domain rule; it is per agent so that one agent's lookups
// never open anything for another. Its size is bounded: past the limits the
// least recently bound entry is evicted.
type NameTable struct {
	now        func() time.Time
	maxEntries int
	maxPerName int

	mu     sync.RWMutex
	byKey  map[bindKey]*binding      // guarded by mu
	byIP   map[netip.Addr][]*binding // guarded by mu
	byName map[string][]*binding     // guarded by mu
	head   binding                   // recency list sentinel; guarded by mu
}

// NewNameTable returns an empty table for one agent. It is safe for
// concurrent use: the agent's DNS answers write it while its flows read it.
func NewNameTable() *NameTable {
	t := &NameTable{
		now:        time.Now,
		maxEntries: maxBindingsPerAgent,
		maxPerName: MaxBindingsPerName,
		byKey:      map[bindKey]*binding{},
		byIP:       map[netip.Addr][]*binding{},
		byName:     map[string][]*binding{},
	}
	t.head.prev, t.head.next = &t.head, &t.head
	return t
}

// bindAddr is the form addresses are kept and looked up in: an IPv4 address
// wrapped in IPv6 is the IPv4 address (flows are decided on that form), and
// a zone never names a different host.
func bindAddr(ip netip.Addr) netip.Addr { return ip.WithZone("").Unmap() }

// Bind records that name resolved to ip for this agent, for ttl (clamped to
// [bindMinTTL, bindMaxTTL]) plus bindGrace. A name that is not a valid DNS
// name, or an invalid address, binds nothing.
func (t *NameTable) Bind(name string, ip netip.Addr, ttl time.Duration) {
	n, err := policy.NormalizeName(name)
	if err != nil || !ip.IsValid() {
		return
	}
	ip = bindAddr(ip)
	exp := t.now().Add(clampTTL(ttl) + bindGrace)

	t.mu.Lock()
	defer t.mu.Unlock()
	k := bindKey{n, ip}
	if b, ok := t.byKey[k]; ok {
		// Keep the later expiry: the agent may still hold the older answer.
		if exp.After(b.expires) {
			b.expires = exp
		}
		t.unlink(b)
		t.pushBack(b)
		return
	}
	t.dropExpiredLocked(2)
	if list := t.byName[n]; len(list) >= t.maxPerName {
		oldest := list[0]
		for _, b := range list[1:] {
			if b.expires.Before(oldest.expires) {
				oldest = b
			}
		}
		t.removeLocked(oldest)
	}
	if len(t.byKey) >= t.maxEntries {
		t.removeLocked(t.head.next)
	}
	b := &binding{name: n, ip: ip, expires: exp}
	t.byKey[k] = b
	t.byIP[ip] = append(t.byIP[ip], b)
	t.byName[n] = append(t.byName[n], b)
	t.pushBack(b)
}

// Names returns the unexpired names bound to ip.
func (t *NameTable) Names(ip netip.Addr) []string {
	ip = bindAddr(ip)
	now := t.now()
	t.mu.RLock()
	defer t.mu.RUnlock()
	var names []string
	for _, b := range t.byIP[ip] {
		if now.Before(b.expires) {
			names = append(names, b.name)
		}
	}
	return names
}

// Has reports whether name is bound to ip and unexpired.
func (t *NameTable) Has(name string, ip netip.Addr) bool {
	n, err := policy.NormalizeName(name)
	if err != nil {
		return false
	}
	now := t.now()
	t.mu.RLock()
	defer t.mu.RUnlock()
	b, ok := t.byKey[bindKey{n, bindAddr(ip)}]
	return ok && now.Before(b.expires)
}

// Len is the number of bindings held, expired or not.
func (t *NameTable) Len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.byKey)
}

// dropExpiredLocked removes up to n expired bindings from the least recently
// bound end, so a table that is no longer used shrinks as it is written.
func (t *NameTable) dropExpiredLocked(n int) {
	now := t.now()
	for b := t.head.next; n > 0 && b != &t.head; n-- {
		next := b.next
		if !now.Before(b.expires) {
			t.removeLocked(b)
		}
		b = next
	}
}

func (t *NameTable) removeLocked(b *binding) {
	t.unlink(b)
	delete(t.byKey, bindKey{b.name, b.ip})
	t.byIP[b.ip] = without(t.byIP[b.ip], b)
	if len(t.byIP[b.ip]) == 0 {
		delete(t.byIP, b.ip)
	}
	t.byName[b.name] = without(t.byName[b.name], b)
	if len(t.byName[b.name]) == 0 {
		delete(t.byName, b.name)
	}
}

func (t *NameTable) pushBack(b *binding) {
	b.prev, b.next = t.head.prev, &t.head
	t.head.prev.next = b
	t.head.prev = b
}

func (t *NameTable) unlink(b *binding) {
	b.prev.next, b.next.prev = b.next, b.prev
	b.prev, b.next = nil, nil
}

// without removes b from list, keeping the order (the first entry of a
// name's list is its oldest).
func without(list []*binding, b *binding) []*binding {
	for i, x := range list {
		if x == b {
			copy(list[i:], list[i+1:])
			list[len(list)-1] = nil
			return list[:len(list)-1]
		}
	}
	return list
}
