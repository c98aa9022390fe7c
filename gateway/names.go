package gateway

import (
	"net/netip"
	"time"
)

// nameTable binds IP → names for one agent, from that agent's own DNS
// answers, each for its TTL. (Being written.)
type nameTable struct{}

func newNameTable() *nameTable { return &nameTable{} }

// Bind records that name resolved to ip for this agent, for ttl.
func (t *nameTable) Bind(name string, ip netip.Addr, ttl time.Duration) {}

// Names returns the unexpired names bound to ip.
func (t *nameTable) Names(ip netip.Addr) []string { return nil }

// Has reports whether name is bound to ip and unexpired.
func (t *nameTable) Has(name string, ip netip.Addr) bool { return false }
