package dnsproxy

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock for name tables.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestNameTable() (*NameTable, *fakeClock) {
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	t := NewNameTable()
	t.now = clk.now
	return t, clk
}

func TestNameTableBind(t *testing.T) {
	tab, _ := newTestNameTable()
	ip := netip.MustParseAddr("93.184.216.34")
	tab.Bind("API.Example.com.", ip, 5*time.Minute)
	tab.Bind("www.example.com", ip, 5*time.Minute)

	tests := []struct {
		name string
		ip   netip.Addr
		want bool
	}{
		{"api.example.com", ip, true},
		{"API.EXAMPLE.COM.", ip, true},
		{"www.example.com", ip, true},
		{"api.example.com", netip.MustParseAddr("::ffff:93.184.216.34"), true},
		{"api.example.com", netip.MustParseAddr("93.184.216.35"), false},
		{"other.example.com", ip, false},
		{"not a name", ip, false},
	}
	for _, tt := range tests {
		if got := tab.Has(tt.name, tt.ip); got != tt.want {
			t.Errorf("Has(%q, %s) = %v, want %v", tt.name, tt.ip, got, tt.want)
		}
	}
	got := tab.Names(netip.MustParseAddr("::ffff:93.184.216.34"))
	slices.Sort(got)
	if want := []string{"api.example.com", "www.example.com"}; !slices.Equal(got, want) {
		t.Errorf("Names(mapped) = %v, want %v", got, want)
	}
	if got := tab.Names(netip.MustParseAddr("1.1.1.1")); got != nil {
		t.Errorf("Names(unbound) = %v, want nil", got)
	}
	// Junk binds nothing.
	tab.Bind("bad name!", ip, time.Minute)
	tab.Bind("ok.example.com", netip.Addr{}, time.Minute)
	if n := tab.Len(); n != 2 {
		t.Errorf("Len() after junk binds = %d, want 2", n)
	}
}

func TestNameTableTTL(t *testing.T) {
	ip := netip.MustParseAddr("2001:4860::1")
	tests := []struct {
		ttl        time.Duration
		aliveUntil time.Duration // still bound just before this
	}{
		{0, bindMinTTL + bindGrace},
		{time.Second, bindMinTTL + bindGrace},
		{5 * time.Minute, 5*time.Minute + bindGrace},
		{48 * time.Hour, bindMaxTTL + bindGrace},
	}
	for _, tt := range tests {
		t.Run(tt.ttl.String(), func(t *testing.T) {
			tab, clk := newTestNameTable()
			tab.Bind("a.example.com", ip, tt.ttl)
			clk.advance(tt.aliveUntil - time.Millisecond)
			if !tab.Has("a.example.com", ip) {
				t.Fatalf("Has() just before %v = false, want true", tt.aliveUntil)
			}
			clk.advance(time.Millisecond)
			if tab.Has("a.example.com", ip) || len(tab.Names(ip)) != 0 {
				t.Fatalf("binding still alive at %v, want expired", tt.aliveUntil)
			}
		})
	}
}

func TestNameTableRefreshKeepsLaterExpiry(t *testing.T) {
	tab, clk := newTestNameTable()
	ip := netip.MustParseAddr("93.184.216.34")
	tab.Bind("a.example.com", ip, 10*time.Minute)
	tab.Bind("a.example.com", ip, 0) // a later, shorter answer
	clk.advance(5 * time.Minute)
	if !tab.Has("a.example.com", ip) {
		t.Fatal("a shorter re-answer cut the earlier binding short")
	}
	if n := tab.Len(); n != 1 {
		t.Fatalf("Len() = %d, want 1 (one binding refreshed)", n)
	}
}

func TestNameTablePerNameCap(t *testing.T) {
	tab, clk := newTestNameTable()
	for i := range MaxBindingsPerName + 5 {
		tab.Bind("cdn.example.com", netip.AddrFrom4([4]byte{93, 184, 0, byte(i)}), time.Minute)
		clk.advance(time.Millisecond)
	}
	if n := tab.Len(); n != MaxBindingsPerName {
		t.Fatalf("Len() = %d, want %d", n, MaxBindingsPerName)
	}
	// The first five (the oldest) were evicted, the newest kept.
	for i := range MaxBindingsPerName + 5 {
		got := tab.Has("cdn.example.com", netip.AddrFrom4([4]byte{93, 184, 0, byte(i)}))
		if want := i >= 5; got != want {
			t.Errorf("Has(address %d) = %v, want %v", i, got, want)
		}
	}
}

func TestNameTablePerAgentCap(t *testing.T) {
	tab, _ := newTestNameTable()
	tab.maxEntries = 100
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{93, 1, byte(i >> 8), byte(i)}) }
	for i := range 100 {
		tab.Bind(fmt.Sprintf("n%d.example.com", i), ip(i), time.Minute)
	}
	// Refresh n0: n1 is now the least recently bound and goes first.
	tab.Bind("n0.example.com", ip(0), time.Minute)
	tab.Bind("new.example.com", ip(1000), time.Minute)
	if n := tab.Len(); n != 100 {
		t.Fatalf("Len() = %d, want 100", n)
	}
	if !tab.Has("n0.example.com", ip(0)) || tab.Has("n1.example.com", ip(1)) || !tab.Has("new.example.com", ip(1000)) {
		t.Fatal("eviction did not take the least recently bound entry")
	}
	for i := range 5000 {
		tab.Bind(fmt.Sprintf("flood%d.example.com", i), ip(i), time.Hour)
	}
	if n := tab.Len(); n != 100 {
		t.Fatalf("Len() after a flood = %d, want 100", n)
	}
	if len(tab.byIP) > 100 || len(tab.byName) > 100 {
		t.Fatalf("indexes grew past the table: byIP %d, byName %d", len(tab.byIP), len(tab.byName))
	}
}

func TestNameTableExpiredShrink(t *testing.T) {
	tab, clk := newTestNameTable()
	for i := range 50 {
		tab.Bind(fmt.Sprintf("n%d.example.com", i), netip.AddrFrom4([4]byte{93, 1, 0, byte(i)}), 0)
	}
	clk.advance(time.Hour)
	for i := range 30 {
		tab.Bind(fmt.Sprintf("live%d.example.com", i), netip.AddrFrom4([4]byte{93, 2, 0, byte(i)}), time.Minute)
	}
	if n := tab.Len(); n != 30 {
		t.Fatalf("Len() = %d, want expired bindings dropped as the table is written", n)
	}
}

func TestNameTableConcurrent(t *testing.T) {
	tab := NewNameTable()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				ip := netip.AddrFrom4([4]byte{93, byte(w), byte(i >> 8), byte(i)})
				tab.Bind(fmt.Sprintf("n%d.example.com", i%300), ip, time.Minute)
				tab.Names(ip)
				tab.Has("n1.example.com", ip)
			}
		}()
	}
	wg.Wait()
	if n := tab.Len(); n > maxBindingsPerAgent {
		t.Fatalf("Len() = %d, want at most %d", n, maxBindingsPerAgent)
	}
}

func BenchmarkNameTableNames(b *testing.B) {
	tab := NewNameTable()
	for i := range maxBindingsPerAgent {
		tab.Bind(fmt.Sprintf("n%d.example.com", i), netip.AddrFrom4([4]byte{93, 1, byte(i >> 8), byte(i)}), time.Hour)
	}
	ip := netip.AddrFrom4([4]byte{93, 1, 0, 7})
	b.ReportAllocs()
	for b.Loop() {
		if len(tab.Names(ip)) != 1 {
			b.Fatal("want one name")
		}
	}
}
