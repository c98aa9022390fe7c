package control

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Publish is one published port: a listener the gateway opens on the host
// that delivers what it accepts, once the agent's ingress rules allow the
// peer, to a port of the agent's.
type Publish struct {
	// HostAddr is the address the listener binds: loopback unless the
	// user named another.
	HostAddr netip.Addr `json:"host_addr"`
	// HostPort is the listener's port; AgentPort the agent's.
	HostPort  uint16 `json:"host_port"`
	AgentPort uint16 `json:"agent_port"`
	// Proto is "tcp" or "udp".
	Proto string `json:"proto"`
}

// String is the spec the user wrote, in its full form:
// HOST_IP:HOST_PORT:AGENT_PORT/PROTO.
func (p Publish) String() string {
	host := p.HostAddr.String()
	if p.HostAddr.Is6() {
		host = "[" + host + "]"
	}
	return fmt.Sprintf("%s:%d:%d/%s", host, p.HostPort, p.AgentPort, p.Proto)
}

// ParsePublish reads a docker-style publish spec,
// [HOST_IP:]HOST_PORT:AGENT_PORT[/tcp|udp]. The host address defaults to
// 127.0.0.1: a published port is reachable from the host alone unless an
// address is named. Errors are one line that quotes the spec.
func ParsePublish(spec string) (Publish, error) {
	bad := func(why string) (Publish, error) {
		return Publish{}, fmt.Errorf("publish %q: %s (want [HOST_IP:]HOST_PORT:AGENT_PORT[/tcp|udp])", spec, why)
	}
	p := Publish{Proto: "tcp", HostAddr: netip.AddrFrom4([4]byte{127, 0, 0, 1})}
	s := spec
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		p.Proto = s[i+1:]
		s = s[:i]
		if p.Proto != "tcp" && p.Proto != "udp" {
			return bad("protocol must be tcp or udp")
		}
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return bad("no agent port")
	}
	agent, rest := s[i+1:], s[:i]
	host := ""
	if j := strings.LastIndexByte(rest, ':'); j >= 0 {
		host, rest = rest[:j], rest[j+1:]
	}
	var err error
	if p.AgentPort, err = parsePort(agent); err != nil {
		return bad("agent port: " + err.Error())
	}
	if p.HostPort, err = parsePort(rest); err != nil {
		return bad("host port: " + err.Error())
	}
	if host != "" {
		a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
		if err != nil {
			return bad("host address " + strconv.Quote(host) + " is not an IP address")
		}
		p.HostAddr = a.Unmap()
	}
	return p, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(s, 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", s)
	}
	return uint16(n), nil
}

// PublishRequest asks the gateway to publish (or unpublish) ports of a
// running agent.
type PublishRequest struct {
	Publish []string `json:"publish"`
}
