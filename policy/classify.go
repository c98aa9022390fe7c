package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Class says what kind of address an IP is, from the IANA IPv4 and IPv6
// special-purpose registries plus the blocks clouds and carriers use. Every
// class but ClassPublic is a special-purpose address: the gateway reaches it
// only when a cidrs rule names its range, and ClassMetadata never.
type Class uint8

const (
	ClassPublic Class = iota
	ClassInvalid
	ClassUnspecified
	ClassThisNetwork
	ClassLoopback
	ClassPrivate
	ClassCGNAT
	ClassLinkLocal
	ClassMetadata
	ClassMulticast
	ClassBroadcast
	ClassDocumentation
	ClassBenchmarking
	ClassReserved
)

var classNames = [...]string{
	ClassPublic:        "public",
	ClassInvalid:       "invalid",
	ClassUnspecified:   "unspecified",
	ClassThisNetwork:   "this-network",
	ClassLoopback:      "loopback",
	ClassPrivate:       "private",
	ClassCGNAT:         "cgnat",
	ClassLinkLocal:     "link-local",
	ClassMetadata:      "metadata",
	ClassMulticast:     "multicast",
	ClassBroadcast:     "broadcast",
	ClassDocumentation: "documentation",
	ClassBenchmarking:  "benchmarking",
	ClassReserved:      "reserved",
}

func (c Class) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// Special reports whether addresses of this class are special-purpose.
func (c Class) Special() bool { return c != ClassPublic }

// AddrInfo is the full answer of the classifier for one address.
type AddrInfo struct {
	Class Class
	// Range is the special-purpose block the address lies in, as a rule
	// must name it (a rule opens the address only if its prefix lies within
	// Range). For an IPv4 address wrapped in IPv6 by NAT64, 6to4 or the
	// IPv4-compatible form, it is the inner block placed inside the wrapping
	// prefix. Invalid for public addresses.
	Range netip.Prefix
	// What names the block, for reasons a person reads: "private (RFC 1918)".
	What string
	// Inner is the IPv4 address unwrapped from an IPv4-in-IPv6 form, and Via
	// names that form ("ipv4-mapped", "nat64", "6to4", "teredo", ...).
	Inner netip.Addr
	Via   string
}

type special struct {
	prefix netip.Prefix
	class  Class
	what   string
}

// ipv4Special and ipv6Special list the blocks, most specific first after
// init sorts them. Blocks the registries mark globally reachable (AS112,
// AMT) are left out on purpose: they are ordinary public addresses.
var ipv4Special = []special{
	{pfx("0.0.0.0/32"), ClassUnspecified, "unspecified (RFC 1122)"},
	{pfx("0.0.0.0/8"), ClassThisNetwork, "this network (RFC 791)"},
	{pfx("10.0.0.0/8"), ClassPrivate, "private (RFC 1918)"},
	{pfx("100.64.0.0/10"), ClassCGNAT, "shared address space, CGNAT (RFC 6598)"},
	{pfx("127.0.0.0/8"), ClassLoopback, "loopback (RFC 1122)"},
	{pfx("169.254.0.0/16"), ClassLinkLocal, "link-local (RFC 3927)"},
	{pfx("172.16.0.0/12"), ClassPrivate, "private (RFC 1918)"},
	{pfx("192.0.0.0/24"), ClassReserved, "IETF protocol assignments (RFC 6890)"},
	{pfx("192.0.2.0/24"), ClassDocumentation, "documentation TEST-NET-1 (RFC 5737)"},
	{pfx("192.88.99.0/24"), ClassReserved, "deprecated 6to4 relay anycast (RFC 7526)"},
	{pfx("192.168.0.0/16"), ClassPrivate, "private (RFC 1918)"},
	{pfx("198.18.0.0/15"), ClassBenchmarking, "benchmarking (RFC 2544)"},
	{pfx("198.51.100.0/24"), ClassDocumentation, "documentation TEST-NET-2 (RFC 5737)"},
	{pfx("203.0.113.0/24"), ClassDocumentation, "documentation TEST-NET-3 (RFC 5737)"},
	{pfx("224.0.0.0/4"), ClassMulticast, "multicast (RFC 5771)"},
	{pfx("240.0.0.0/4"), ClassReserved, "reserved for future use (RFC 1112)"},
	{pfx("255.255.255.255/32"), ClassBroadcast, "limited broadcast (RFC 919)"},

	// Cloud instance metadata and credential endpoints. Reaching one from an
	// agent hands it the host's cloud credentials, so no rule opens them.
	{pfx("169.254.169.254/32"), ClassMetadata, "cloud metadata (AWS, GCP, Azure, OCI, OpenStack, DigitalOcean)"},
	{pfx("169.254.170.2/32"), ClassMetadata, "cloud metadata (AWS ECS task credentials)"},
	{pfx("169.254.170.23/32"), ClassMetadata, "cloud metadata (AWS EKS pod identity)"},
	{pfx("100.100.100.200/32"), ClassMetadata, "cloud metadata (Alibaba Cloud)"},
	{pfx("192.0.0.192/32"), ClassMetadata, "cloud metadata (Oracle Cloud)"},
	// Azure's WireServer is a public address that serves host-side agent
	// and credential traffic to every VM.
	{pfx("168.63.129.16/32"), ClassMetadata, "cloud metadata (Azure WireServer)"},
}

var ipv6Special = []special{
	{pfx("::/128"), ClassUnspecified, "unspecified (RFC 4291)"},
	{pfx("::1/128"), ClassLoopback, "loopback (RFC 4291)"},
	{pfx("100::/64"), ClassReserved, "discard-only (RFC 6666)"},
	{pfx("100:0:0:1::/64"), ClassReserved, "dummy prefix (RFC 9780)"},
	{pfx("2001::/23"), ClassReserved, "IETF protocol assignments (RFC 2928)"},
	{pfx("2001:2::/48"), ClassBenchmarking, "benchmarking (RFC 5180)"},
	{pfx("2001:db8::/32"), ClassDocumentation, "documentation (RFC 3849)"},
	{pfx("3fff::/20"), ClassDocumentation, "documentation (RFC 9637)"},
	{pfx("5f00::/16"), ClassReserved, "segment routing SIDs (RFC 9602)"},
	{pfx("fc00::/7"), ClassPrivate, "unique local (RFC 4193)"},
	{pfx("fe80::/10"), ClassLinkLocal, "link-local (RFC 4291)"},
	{pfx("fec0::/10"), ClassReserved, "deprecated site-local (RFC 3879)"},
	{pfx("ff00::/8"), ClassMulticast, "multicast (RFC 4291)"},

	{pfx("fd00:ec2::254/128"), ClassMetadata, "cloud metadata (AWS IPv6)"},
	{pfx("fd00:ec2::23/128"), ClassMetadata, "cloud metadata (AWS EKS pod identity IPv6)"},
	{pfx("fd20:ce::254/128"), ClassMetadata, "cloud metadata (GCP IPv6)"},
}

// Prefixes that embed an IPv4 address. The inner address decides the class.
var (
	mapped4     = pfx("::ffff:0:0/96")   // RFC 4291
	translated4 = pfx("::ffff:0:0:0/96") // RFC 2765 SIIT
	compat4     = pfx("::/96")           // RFC 4291, deprecated
	nat64       = pfx("64:ff9b::/96")    // RFC 6052
	nat64Local  = pfx("64:ff9b:1::/48")  // RFC 8215
	sixToFour   = pfx("2002::/16")       // RFC 3056
	teredo      = pfx("2001::/32")       // RFC 4380
	global6     = pfx("2000::/3")        // all IANA has allocated for unicast
)

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// specialIndex finds the most specific block of ipv4Special or
// ipv6Special containing an address without scanning them all.
var specialIndex prefixTable

func init() {
	// Most specific first, so that a scan finds the block that names an
	// address first; the tests use the sorted tables directly.
	for _, t := range [][]special{ipv4Special, ipv6Special} {
		slices.SortStableFunc(t, func(a, b special) int { return cmp.Compare(b.prefix.Bits(), a.prefix.Bits()) })
	}
	for i, s := range ipv4Special {
		specialIndex.add(s.prefix, int32(i))
	}
	for i, s := range ipv6Special {
		specialIndex.add(s.prefix, int32(i))
	}
	specialIndex.build()
}

// Classify returns the class of a. IPv4 addresses wrapped in IPv6 take the
// class of the IPv4 address inside.
func Classify(a netip.Addr) Class { return ClassifyAddr(a).Class }

// ClassifyAddr classifies a and says which block it lies in.
func ClassifyAddr(a netip.Addr) AddrInfo {
	if !a.IsValid() {
		return AddrInfo{Class: ClassInvalid, What: "invalid address"}
	}
	a = a.WithZone("")
	if a.Is4() {
		return lookupSpecial(ipv4Special, a)
	}
	if a.Is4In6() {
		in := a.Unmap()
		info := lookupSpecial(ipv4Special, in)
		info.Inner, info.Via = in, "ipv4-mapped"
		return info
	}
	switch {
	case a == netip.IPv6Unspecified() || a == netip.IPv6Loopback():
		return lookupSpecial(ipv6Special, a)
	case translated4.Contains(a):
		return wrapped(a, translated4, "ipv4-translated", 12)
	case compat4.Contains(a):
		return wrapped(a, compat4, "ipv4-compatible", 12)
	case nat64.Contains(a):
		return wrapped(a, nat64, "nat64", 12)
	case nat64Local.Contains(a):
		// The operator picks where the IPv4 address sits inside this
		// local-use prefix, so the whole prefix is special whatever the
		// last 32 bits say.
		info := wrapped(a, nat64Local, "nat64-local", 12)
		info.Range = nat64Local
		if !info.Class.Special() {
			info.Class, info.What = ClassReserved, "local-use IPv4/IPv6 translation (RFC 8215)"
		}
		return info
	case sixToFour.Contains(a):
		return wrapped(a, sixToFour, "6to4", 2)
	case teredo.Contains(a):
		// The client address is the last 32 bits, inverted. Its bits are not
		// contiguous with the prefix, so only a rule naming this exact
		// address can open a special one.
		b := a.As16()
		in := netip.AddrFrom4([4]byte{^b[12], ^b[13], ^b[14], ^b[15]})
		info := lookupSpecial(ipv4Special, in)
		info.Inner, info.Via = in, "teredo"
		if info.Class.Special() {
			info.Range = netip.PrefixFrom(a, 128)
		}
		return info
	}
	info := lookupSpecial(ipv6Special, a)
	if !info.Class.Special() && !global6.Contains(a) {
		return AddrInfo{Class: ClassReserved, Range: netip.PrefixFrom(a, 8).Masked(), What: "not allocated for unicast by IANA"}
	}
	return info
}

func lookupSpecial(table []special, a netip.Addr) AddrInfo {
	info := AddrInfo{Class: ClassPublic, What: "public"}
	specialIndex.match(a, func(i int32, _ netip.Prefix) bool {
		s := table[i]
		info = AddrInfo{Class: s.class, Range: s.prefix, What: s.what}
		return false
	})
	return info
}

// wrapped classifies the IPv4 address at byte offset off of a and places
// its block inside outer, so that a rule naming e.g. 64:ff9b::10.20.0.0/112
// opens 64:ff9b::10.20.1.1 but 64:ff9b::/96 does not open private space.
func wrapped(a netip.Addr, outer netip.Prefix, via string, off int) AddrInfo {
	b := a.As16()
	in := netip.AddrFrom4([4]byte(b[off : off+4]))
	info := lookupSpecial(ipv4Special, in)
	info.Inner, info.Via = in, via
	if info.Class.Special() {
		r := outer.Addr().As16()
		inner := info.Range.Addr().As4()
		copy(r[off:off+4], inner[:])
		info.Range = netip.PrefixFrom(netip.AddrFrom16(r), off*8+info.Range.Bits())
	}
	return info
}

// describe renders the classification for a reason line, e.g.
// "::ffff:10.0.0.1 is private (RFC 1918) via ipv4-mapped 10.0.0.1".
func (i AddrInfo) describe(a netip.Addr) string {
	s := a.String() + " is " + i.What
	if i.Via != "" {
		s += " (" + i.Via + " " + i.Inner.String() + ")"
	}
	return s
}
