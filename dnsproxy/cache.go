package dnsproxy

import (
	"container/list"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Bounds of what the answer path remembers of the upstream for all agents.
const (
	// DefaultCacheSize is a reasonable bound on the answers kept.
	DefaultCacheSize = 10000
	// DefaultFailureTTL is a reasonable time to answer a failed lookup
	// SERVFAIL without asking again (RFC 9520 wants at least 1 s).
	DefaultFailureTTL = 5 * time.Second
	// maxFailures bounds the failures kept, apart from the answers, so
	// that failing names do not push out the answers that still work.
	maxFailures = 4096
	// negMaxTTL bounds how long an NXDOMAIN or an empty answer is kept
	// (RFC 2308: the SOA's TTL says how long, and no SOA means not at
	// all); a name made a moment ago is found soon.
	negMaxTTL = time.Minute
)

// cacheKey is what an upstream lookup depends on: the normalized name and
// the type. The agent, its policy and its spelling of the name are not part
// of it; they are applied to what the cache gives back.
type cacheKey struct {
	name  string
	qtype uint16
}

// cacheEntry is one upstream outcome for a name and type, kept until
// expires.
type cacheEntry struct {
	key     cacheKey
	expires time.Time
	// err is why the upstream failed, for a failure; "" for an answer.
	err string
	// rcode, addrs and note are the answer: NOERROR or NXDOMAIN, the
	// addresses left by the rebinding filter (never an unfiltered one),
	// and what the audit line says was left out.
	rcode int
	addrs []netip.Addr
	note  string
}

// answerCache keeps upstream outcomes, each until it expires, at most max
// of them: past that the least recently used goes first. It is safe for
// concurrent use. A nil *answerCache keeps nothing.
type answerCache struct {
	max int
	now func() time.Time

	mu      sync.Mutex
	entries map[cacheKey]*list.Element // of *cacheEntry; guarded by mu
	lru     list.List                  // front: most recently used; guarded by mu
}

func newAnswerCache(max int) *answerCache {
	if max <= 0 {
		return nil
	}
	return &answerCache{max: max, now: time.Now, entries: map[cacheKey]*list.Element{}}
}

// get returns the entry for k if it has not expired, and how long it has
// left.
func (c *answerCache) get(k cacheKey) (e cacheEntry, left time.Duration, ok bool) {
	if c == nil {
		return cacheEntry{}, 0, false
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[k]
	if !ok {
		return cacheEntry{}, 0, false
	}
	ce := el.Value.(*cacheEntry)
	if left = ce.expires.Sub(now); left <= 0 {
		c.removeLocked(el)
		return cacheEntry{}, 0, false
	}
	c.lru.MoveToFront(el)
	return *ce, left, true
}

// put keeps e for ttl, in place of what was kept for its key.
func (c *answerCache) put(e cacheEntry, ttl time.Duration) {
	if c == nil || ttl <= 0 {
		return
	}
	e.expires = c.now().Add(ttl)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[e.key]; ok {
		el.Value = &e
		c.lru.MoveToFront(el)
		return
	}
	c.entries[e.key] = c.lru.PushFront(&e)
	for c.lru.Len() > c.max {
		c.removeLocked(c.lru.Back())
	}
}

// drop forgets k.
func (c *answerCache) drop(k cacheKey) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[k]; ok {
		c.removeLocked(el)
	}
}

func (c *answerCache) removeLocked(el *list.Element) {
	delete(c.entries, el.Value.(*cacheEntry).key)
	c.lru.Remove(el)
}

// len is how many entries are kept, expired ones included.
func (c *answerCache) len() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// negativeTTL is how long an NXDOMAIN or empty answer may be kept: the
// smaller of its SOA's TTL and minimum (RFC 2308), at most negMaxTTL; 0
// without a SOA.
func negativeTTL(resp *dns.Msg) time.Duration {
	for _, rr := range resp.Ns {
		if soa, ok := rr.(*dns.SOA); ok && soa.Hdr.Class == dns.ClassINET {
			return min(time.Duration(min(soa.Hdr.Ttl, soa.Minttl))*time.Second, negMaxTTL)
		}
	}
	return 0
}
