package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/clawnet/clawnet/dnsproxy"
	"github.com/clawnet/clawnet/gateway/control"
)

// Config is the gateway's configuration: defaults, then the file, then flags.
type Config struct {
	Version       string         `yaml:"version"`
	Socket        string         `yaml:"socket"`
	PolicyDir     string         `yaml:"policy_dir"`
	DefaultPolicy string         `yaml:"default_policy"`
	LLMProvider   string         `yaml:"llm_provider"`
	MCPServers    []string       `yaml:"mcp_servers"`
	DNS           DNSConfig      `yaml:"dns"`
	AuditLog      string         `yaml:"audit_log"`
	StateDir      string         `yaml:"state_dir"` // what is attached, for a restart (state.go); "": none
	TreatAsPublic PrefixList     `yaml:"treat_as_public"`
	Network       NetworkConfig  `yaml:"network"`
	Limits        LimitsConfig   `yaml:"limits"`
	Timeouts      TimeoutsConfig `yaml:"timeouts"`
	// AuditLimits bounds the audit lines of one agent, each event on its
	// own; what they leave out is counted on the next line written.
	AuditLimits AuditLimitsConfig `yaml:"audit_limits"`
	Metrics     MetricsConfig     `yaml:"metrics"`
	Control     ControlConfig     `yaml:"control"`

	// path is the file the config came from, for messages.
	path string
}

// DNSConfig configures the gateway's resolver.
type DNSConfig struct {
	// Upstream is "system" (the host's resolv.conf) or a list of ip:port.
	Upstream Upstream `yaml:"upstream"`
	// QueriesPerSecond and Burst bound one agent's queries; past them the
	// gateway answers REFUSED at once.
	QueriesPerSecond int `yaml:"queries_per_second"`
	Burst            int `yaml:"burst"`
	// TryTimeout bounds one exchange with one upstream server; a lookup
	// retries across the servers within dnsproxy.UpstreamTimeout.
	TryTimeout Duration `yaml:"try_timeout"`
	// CacheSize bounds the upstream answers kept for all agents; 0 keeps
	// none.
	CacheSize int `yaml:"cache_size"`
	// ServfailTTL is how long a lookup the upstream failed is answered
	// SERVFAIL at once; 0 asks again every time.
	ServfailTTL Duration `yaml:"servfail_ttl"`
}

// Bounds of the dns keys: a cache entry costs well under a KiB, and a
// failure kept longer than RFC 9520's 5 minutes hides a recovered name.
const (
	maxDNSCacheSize   = 1000000
	maxDNSServfailTTL = 5 * time.Minute
)

// Upstream is either the host's resolvers or explicit servers.
type Upstream struct {
	System  bool
	Servers []netip.AddrPort
}

// NetworkConfig sets the agents' link.
type NetworkConfig struct {
	Interface string       `yaml:"interface"`
	MTU       int          `yaml:"mtu"`
	IPv4      netip.Prefix `yaml:"ipv4"`
	IPv6      netip.Prefix `yaml:"ipv6"`
}

// GatewayAddrs returns the gateway's own addresses on every agent link: the
// first address of each agent prefix.
func (n NetworkConfig) GatewayAddrs() (v4, v6 netip.Addr) {
	return newAddrPool(n.IPv4, n.IPv6).gateway()
}

// LimitsConfig bounds what one agent can make the gateway hold.
type LimitsConfig struct {
	FlowsPerAgent int `yaml:"flows_per_agent"`
	// Flows bounds live flows over all agents together.
	Flows              int `yaml:"flows"`
	HandshakesPerAgent int `yaml:"handshakes_per_agent"`
	// NewFlowsPerSecond and NewFlowsBurst bound how fast one agent may
	// open flows (TCP and UDP), so a connect flood costs its neighbours
	// little: past them a new flow is refused at once.
	NewFlowsPerSecond float64 `yaml:"new_flows_per_second"`
	NewFlowsBurst     int     `yaml:"new_flows_burst"`
	// PacketsPerSecond and PacketBurst bound the packets a second one
	// agent can make the gateway process (its TUN is read no faster): a
	// UDP or DNS flood is dropped in the flooder's own kernel.
	PacketsPerSecond float64 `yaml:"packets_per_second"`
	PacketBurst      int     `yaml:"packet_burst"`
	// UDPPacketsPerSecond and UDPPacketBurst bound the UDP datagrams among
	// them (each costs a whole forward): past them one is dropped at once.
	UDPPacketsPerSecond float64 `yaml:"udp_packets_per_second"`
	UDPPacketBurst      int     `yaml:"udp_packet_burst"`
	Agents              int     `yaml:"agents"`
	// BufferPerAgent caps the bytes one agent's flows can make the
	// gateway hold: its stack's send and receive buffers and the copy
	// buffers of its flows, counted at their most (see budget.go).
	BufferPerAgent ByteSize `yaml:"buffer_per_agent"`
	// MemoryLimit is the daemon's soft memory limit (as GOMEMLIMIT); 0 is
	// none. The buffer budgets bound what agents hold; this bounds the
	// whole process's garbage too.
	MemoryLimit ByteSize `yaml:"memory_limit"`
}

// ByteSize is a size in bytes written as a number or with a binary unit:
// 512MiB, 64KiB, 1GiB.
type ByteSize int64

func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: bad size %q (want for example 512MiB or 1GiB)", n.Line, n.Value)
	}
	*b = v
	return nil
}

func parseByteSize(s string) (ByteSize, error) {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 || v > (1<<50)/mult {
		return 0, errors.New("bad size")
	}
	return ByteSize(v * mult), nil
}

// AuditLimitsConfig is the rate of audit lines one agent may write, per
// event. The defaults never bite an agent at work; they stop a scanning or
// failing one from filling the disk.
type AuditLimitsConfig struct {
	Open  AuditRate `yaml:"open"`
	Close AuditRate `yaml:"close"`
	Deny  AuditRate `yaml:"deny"`
	Fail  AuditRate `yaml:"fail"`
	DNS   AuditRate `yaml:"dns"`
}

// AuditRate is a token bucket: lines per second, sustained, and a burst.
type AuditRate struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// MetricsConfig sets where the Prometheus metrics are served besides the
// control socket's /metrics.
type MetricsConfig struct {
	// Listen is a TCP ADDR:PORT; empty (the default) serves none.
	Listen string `yaml:"listen"`
}

// ControlConfig bounds the control API's server (and the metrics
// listener's).
type ControlConfig struct {
	// MaxConnections caps the connections served at once; past it the
	// one idle longest is closed to make room, or the new one waits.
	MaxConnections int `yaml:"max_connections"`
}

// TimeoutsConfig sets flow timers.
type TimeoutsConfig struct {
	Dial    Duration `yaml:"dial"`
	TCPIdle Duration `yaml:"tcp_idle"`
	UDPIdle Duration `yaml:"udp_idle"`
	// Keepalive is the TCP keepalive interval on upstream connections.
	Keepalive Duration `yaml:"keepalive"`
}

// Duration is a time.Duration written as "90s", "2h".
type Duration time.Duration

func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: bad duration %q (want for example 30s or 2h)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

func (d Duration) D() time.Duration { return time.Duration(d) }

func (u *Upstream) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		if n.Value != "system" {
			return fmt.Errorf("line %d: dns.upstream must be \"system\" or a list of ip:port, not %q", n.Line, n.Value)
		}
		*u = Upstream{System: true}
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		return fmt.Errorf("line %d: dns.upstream must be \"system\" or a list of ip:port", n.Line)
	}
	*u = Upstream{}
	for _, e := range n.Content {
		ap, err := parseServer(e.Value)
		if err != nil || e.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: bad dns server %q (want ip or ip:port)", e.Line, e.Value)
		}
		u.Servers = append(u.Servers, ap)
	}
	return nil
}

// PrefixList is a list of CIDRs whose errors name their line.
type PrefixList []netip.Prefix

func (l *PrefixList) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.SequenceNode {
		return fmt.Errorf("line %d: want a list of CIDRs", n.Line)
	}
	*l = nil
	for _, e := range n.Content {
		p, err := netip.ParsePrefix(e.Value)
		if err != nil || e.Kind != yaml.ScalarNode {
			return fmt.Errorf("line %d: bad CIDR %q", e.Line, e.Value)
		}
		if p != p.Masked() {
			return fmt.Errorf("line %d: %s has host bits set (did you mean %s?)", e.Line, p, p.Masked())
		}
		*l = append(*l, p)
	}
	return nil
}

func parseServer(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap, nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.AddrPortFrom(a, 53), nil
	}
	return netip.AddrPort{}, fmt.Errorf("bad dns server %q (want ip or ip:port)", s)
}

// DefaultConfig is what clawnetd runs on without a config file.
func DefaultConfig() *Config {
	return &Config{
		Version:       "v1",
		Socket:        control.DefaultSocket,
		PolicyDir:     "/etc/clawnet/policies",
		DefaultPolicy: "default",
		LLMProvider:   "anthropic",
		DNS: DNSConfig{Upstream: Upstream{System: true}, QueriesPerSecond: 200, Burst: 400,
			TryTimeout: Duration(dnsproxy.DefaultTryTimeout), CacheSize: dnsproxy.DefaultCacheSize,
			ServfailTTL: Duration(dnsproxy.DefaultFailureTTL)},
		AuditLog: "-",
		StateDir: "/var/lib/clawnet",
		Network: NetworkConfig{
			Interface: "clawnet0",
			MTU:       65520,
			IPv4:      netip.MustParsePrefix("100.96.0.0/16"),
			IPv6:      netip.MustParsePrefix("fd63:6c61:776e:1::/64"),
		},
		Limits: LimitsConfig{FlowsPerAgent: 4096, Flows: 262144, HandshakesPerAgent: 256, Agents: 4096, BufferPerAgent: 1 << 30,
			NewFlowsPerSecond: 500, NewFlowsBurst: 1000, PacketsPerSecond: 50000, PacketBurst: 50000,
			UDPPacketsPerSecond: 10000, UDPPacketBurst: 10000},
		Timeouts: TimeoutsConfig{
			Dial:      Duration(10 * time.Second),
			TCPIdle:   Duration(2 * time.Hour),
			UDPIdle:   Duration(2 * time.Minute),
			Keepalive: Duration(30 * time.Second),
		},
		AuditLimits: AuditLimitsConfig{
			Open:  AuditRate{PerSecond: 200, Burst: 400},
			Close: AuditRate{PerSecond: 200, Burst: 400},
			Deny:  AuditRate{PerSecond: 20, Burst: 50},
			Fail:  AuditRate{PerSecond: 20, Burst: 50},
			DNS:   AuditRate{PerSecond: 200, Burst: 400},
		},
		Control: ControlConfig{MaxConnections: 256},
		path:    "<defaults>",
	}
}

// LoadConfig reads path over the defaults. Unknown keys and bad values are
// errors that name the file and line.
func LoadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return ParseConfig(path, data)
}

var yamlLine = regexp.MustCompile(`line (\d+): (.*)`)

// ParseConfig parses data (from path) over the defaults.
func ParseConfig(path string, data []byte) (*Config, error) {
	c := DefaultConfig()
	c.path = path
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return nil, yamlError(path, err)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// yamlError turns yaml.v3's multi-line errors into one "file:line: msg".
func yamlError(path string, err error) error {
	var te *yaml.TypeError
	msg := err.Error()
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = te.Errors[0]
	}
	msg = strings.TrimPrefix(msg, "yaml: ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		detail := m[2]
		if f := regexp.MustCompile(`field (\S+) not found in type`).FindStringSubmatch(detail); f != nil {
			detail = fmt.Sprintf("unknown key %q", f[1])
		}
		return fmt.Errorf("%s:%d: %s", path, n, detail)
	}
	return fmt.Errorf("%s: %s", path, msg)
}

func (c *Config) validate() error {
	if c.Version != "v1" {
		return fmt.Errorf("version must be v1, not %q", c.Version)
	}
	if c.Socket == "" {
		return errors.New("socket must not be empty")
	}
	if c.DefaultPolicy == "" {
		return errors.New("default_policy must not be empty")
	}
	if c.StateDir != "" && !filepath.IsAbs(c.StateDir) {
		return fmt.Errorf("state_dir must be an absolute path (or empty to keep no state), not %q", c.StateDir)
	}
	n := c.Network
	if !n.IPv4.IsValid() || !n.IPv4.Addr().Is4() || n.IPv4.Bits() > 30 {
		return fmt.Errorf("network.ipv4 must be an IPv4 prefix of /30 or wider, not %s", n.IPv4)
	}
	if !n.IPv6.IsValid() || n.IPv6.Addr().Is4() || n.IPv6.Bits() > 126 {
		return fmt.Errorf("network.ipv6 must be an IPv6 prefix of /126 or wider, not %s", n.IPv6)
	}
	if n.MTU < 1280 || n.MTU > 65535 {
		return fmt.Errorf("network.mtu must be between 1280 and 65535, not %d", n.MTU)
	}
	if n.Interface == "" || len(n.Interface) > 15 {
		return fmt.Errorf("network.interface must be 1 to 15 characters, not %q", n.Interface)
	}
	if c.Limits.FlowsPerAgent <= 0 || c.Limits.Flows <= 0 || c.Limits.HandshakesPerAgent <= 0 || c.Limits.Agents <= 0 ||
		c.Limits.NewFlowsPerSecond <= 0 || c.Limits.NewFlowsBurst <= 0 || c.Limits.PacketsPerSecond <= 0 || c.Limits.PacketBurst <= 0 ||
		c.Limits.UDPPacketsPerSecond <= 0 || c.Limits.UDPPacketBurst <= 0 {
		return errors.New("limits must be positive")
	}
	if c.Limits.BufferPerAgent < minBufferPerAgent {
		return fmt.Errorf("limits.buffer_per_agent must be at least %d bytes (one full-sized flow), not %d", minBufferPerAgent, c.Limits.BufferPerAgent)
	}
	if c.Timeouts.Dial <= 0 || c.Timeouts.TCPIdle <= 0 || c.Timeouts.UDPIdle <= 0 {
		return errors.New("timeouts must be positive")
	}
	for _, p := range c.TreatAsPublic {
		if p.Bits() == 0 {
			return fmt.Errorf("treat_as_public must not contain %s: name the lab's ranges", p)
		}
	}
	if c.DNS.QueriesPerSecond <= 0 || c.DNS.Burst <= 0 {
		return errors.New("dns.queries_per_second and dns.burst must be positive")
	}
	if c.DNS.TryTimeout <= 0 || c.DNS.TryTimeout.D() > dnsproxy.UpstreamTimeout {
		return fmt.Errorf("dns.try_timeout must be positive and at most %v, not %v", dnsproxy.UpstreamTimeout, c.DNS.TryTimeout.D())
	}
	if c.DNS.CacheSize < 0 || c.DNS.CacheSize > maxDNSCacheSize {
		return fmt.Errorf("dns.cache_size must be between 0 and %d, not %d", maxDNSCacheSize, c.DNS.CacheSize)
	}
	if c.DNS.ServfailTTL < 0 || c.DNS.ServfailTTL.D() > maxDNSServfailTTL {
		return fmt.Errorf("dns.servfail_ttl must be between 0s and %v, not %v", maxDNSServfailTTL, c.DNS.ServfailTTL.D())
	}
	if !c.DNS.Upstream.System && len(c.DNS.Upstream.Servers) == 0 {
		return errors.New("dns.upstream needs at least one server, or \"system\"")
	}
	for _, r := range []struct {
		key string
		r   AuditRate
	}{{"open", c.AuditLimits.Open}, {"close", c.AuditLimits.Close}, {"deny", c.AuditLimits.Deny}, {"fail", c.AuditLimits.Fail}, {"dns", c.AuditLimits.DNS}} {
		if r.r.PerSecond <= 0 || r.r.Burst <= 0 {
			return fmt.Errorf("audit_limits.%s: per_second and burst must be positive", r.key)
		}
	}
	if l := c.Metrics.Listen; l != "" {
		if _, err := netip.ParseAddrPort(l); err != nil {
			return fmt.Errorf("metrics.listen must be an IP:PORT such as 127.0.0.1:9310, not %q", l)
		}
	}
	if c.Control.MaxConnections <= 0 {
		return errors.New("control.max_connections must be positive")
	}
	return nil
}
