package gateway

import (
	"net/http"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/clawnet/clawnet/internal/version"
	"github.com/clawnet/clawnet/policy"
)

// metrics are the gateway's Prometheus series, on a registry of its own
// (never the process-wide default). An agent's series are read from the
// attached agents at scrape time: they cost nothing per packet, and they
// vanish with the agent, so per-agent labels stay bounded by
// limits.agents. What outlives agents (reloads, the audit log, dials) is
// counted as it happens.
//
// A nil *metrics counts nothing: gateways built by hand in tests have none.
type metrics struct {
	reg        *prometheus.Registry
	reloads    *prometheus.CounterVec   // result
	suppressed *prometheus.CounterVec   // event
	dial       *prometheus.HistogramVec // proto, result

	mu        sync.Mutex
	listeners map[string]*capListener // by name; guarded by mu
}

// Label values of bounded sets; anything else is "other".
const (
	labelOther = "other"
	resultOK   = "ok"
	resultErr  = "error"
)

// dialBuckets spans a dial on the same host (well under a millisecond) to
// timeouts.dial's default (10s).
var dialBuckets = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

func newMetrics(g *Gateway) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clawnet_policy_reloads_total",
			Help: "Policy reloads (clawnet reload, SIGHUP, an edit in policy_dir) by result: error when any file was refused.",
		}, []string{"result"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clawnet_audit_lines_suppressed_total",
			Help: "Audit lines left out by the per-agent rate limits (audit_limits), by event; each is counted in the suppressed field of the next line of its agent and event.",
		}, []string{"event"}),
		dial: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "clawnet_dial_seconds",
			Help:    "Time from an agent's SYN (or first datagram) to its flow's upstream connection, for flows forwarded directly; result error when the upstream could not be reached.",
			Buckets: dialBuckets,
		}, []string{"proto", "result"}),
		listeners: map[string]*capListener{},
	}
	for _, r := range []string{resultOK, resultErr} {
		m.reloads.WithLabelValues(r)
		for _, p := range []string{"tcp", "udp"} {
			m.dial.WithLabelValues(p, r)
		}
	}
	for _, c := range auditClassNames {
		m.suppressed.WithLabelValues(c)
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "clawnet_build_info",
		Help:        "Always 1; the labels name the running build.",
		ConstLabels: prometheus.Labels{"version": version.Version, "goversion": runtime.Version()},
	})
	info.Set(1)
	m.reg.MustRegister(m.reloads, m.suppressed, m.dial, info, &collector{g: g, m: m},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// handler serves the registry in Prometheus' text (or a negotiated)
// format.
func (m *metrics) handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4, Timeout: 10 * time.Second})
}

// MetricsHandler serves the gateway's metrics, as GET /metrics on the
// control API does (clawnetd serves it on metrics.listen too).
func (g *Gateway) MetricsHandler() http.Handler { return g.metrics.handler() }

// reload counts a policy reload by its result.
func (m *metrics) reload(err error) {
	if m == nil {
		return
	}
	r := resultOK
	if err != nil {
		r = resultErr
	}
	m.reloads.WithLabelValues(r).Inc()
}

// line counts the gateway-wide side of an audit line, written or not: the
// dial latency of a directly forwarded flow.
func (m *metrics) line(ev *AuditEvent) {
	if m == nil || ev.setup <= 0 {
		return
	}
	r := resultOK
	if ev.Event == EventFail {
		r = resultErr
	}
	m.dial.WithLabelValues(protoLabel(ev.Proto), r).Observe(ev.setup.Seconds())
}

// suppress counts n lines of class c left out.
func (m *metrics) suppress(c auditClass, n uint64) {
	if m == nil || n == 0 {
		return
	}
	m.suppressed.WithLabelValues(auditClassNames[c]).Add(float64(n))
}

// listener has the connection counts of l read at scrape, as name.
func (m *metrics) listener(name string, l *capListener) {
	if m == nil {
		return
	}
	m.mu.Lock()
	m.listeners[name] = l
	m.mu.Unlock()
}

// agentSeries names one of an agent's counted series.
type agentSeries uint8

const (
	seriesFlows    agentSeries = iota // verdict, proto, direction
	seriesFailures                    // proto
	seriesDenies                      // kind, reason
	seriesRevoked                     //
	seriesDNS                         // verdict, rcode
)

type countKey struct {
	series     agentSeries
	l1, l2, l3 string
}

// agentCounts are what one agent's audit lines counted, written or
// suppressed: the source of its series.
type agentCounts struct {
	mu sync.Mutex
	n  map[countKey]uint64 // guarded by mu
}

func (c *agentCounts) add(k countKey, n uint64) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[countKey]uint64{}
	}
	c.n[k] += n
	c.mu.Unlock()
}

func (c *agentCounts) snapshot() map[countKey]uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[countKey]uint64, len(c.n))
	for k, v := range c.n {
		out[k] = v
	}
	return out
}

// count adds ev to the agent's counts: n lines like it (more than one when
// an earlier limiter left some out and counted them on ev).
func (c *agentCounts) count(ev *AuditEvent, n uint64) {
	verdict := verdictLabel(ev.Verdict)
	if ev.Kind == KindDNS {
		c.add(countKey{seriesDNS, verdict, rcodeLabel(ev.RCode), ""}, n)
		if verdict == "deny" {
			c.add(countKey{seriesDenies, string(KindDNS), reasonClass(ev.Rule), ""}, n)
		}
		return
	}
	proto := protoLabel(ev.Proto)
	switch ev.Event {
	case EventOpen, EventDeny, EventFail:
		dir := "out"
		if ev.Direction == "in" {
			dir = "in"
		}
		c.add(countKey{seriesFlows, verdict, proto, dir}, n)
		if ev.Event == EventFail {
			c.add(countKey{seriesFailures, proto, "", ""}, n)
		}
		if ev.Event == EventDeny {
			c.add(countKey{seriesDenies, string(KindFlow), reasonClass(ev.Rule), ""}, n)
		}
	case EventRevoke:
		c.add(countKey{seriesRevoked, "", "", ""}, n)
	}
}

func verdictLabel(v string) string {
	if v == "allow" || v == "deny" {
		return v
	}
	return labelOther
}

func protoLabel(p string) string {
	if p == "tcp" || p == "udp" {
		return p
	}
	return labelOther
}

// rcodeLabel keeps the answers a resolver gives; "none" is a query dropped
// unanswered.
func rcodeLabel(rc string) string {
	switch rc {
	case "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED", "FORMERR", "NOTIMP":
		return rc
	case "":
		return "none"
	}
	return labelOther
}

var builtinRule = regexp.MustCompile(`^builtin:[a-z0-9-]{1,32}$`)

// policyRuleKinds are the kinds a policy rule's id can name (see
// policy.ruleID and policy.Default).
var policyRuleKinds = map[string]bool{
	"egress": true, "deny": true, "ingress": true, "ingress_deny": true, "preset": true, "mcp_servers": true,
}

// reasonClass is a deny's rule reduced to a bounded label: a builtin rule
// by name (the gateway's own, a fixed set), "default" for default deny,
// and a policy rule by its kind ("coder.yaml:12 deny[1]" is policy:deny),
// never the free text of a file name or line.
func reasonClass(rule string) string {
	switch {
	case rule == policy.RuleDefault:
		return policy.RuleDefault
	case builtinRule.MatchString(rule):
		return rule
	case strings.HasPrefix(rule, "builtin:"):
		return "builtin:" + labelOther
	case rule == "":
		return "none"
	}
	_, what, _ := strings.Cut(rule, " ")
	kind, _, _ := strings.Cut(what, " ")
	kind, _, _ = strings.Cut(kind, "[")
	if policyRuleKinds[kind] {
		return "policy:" + kind
	}
	return "policy:" + labelOther
}

var (
	descAgents = prometheus.NewDesc("clawnet_agents_attached",
		"Agents attached now.", nil, nil)
	descAgentInfo = prometheus.NewDesc("clawnet_agent_info",
		"Always 1 for an attached agent; policy names the policy it is attached under.", []string{"agent", "policy"}, nil)
	descLive = prometheus.NewDesc("clawnet_flows_live",
		"The agent's live flows, DNS-over-TCP connections included.", []string{"agent"}, nil)
	descBytesUp = prometheus.NewDesc("clawnet_bytes_up_total",
		"Bytes the agent's flows sent upstream (agent to peer).", []string{"agent"}, nil)
	descBytesDown = prometheus.NewDesc("clawnet_bytes_down_total",
		"Bytes the agent's flows received (peer to agent).", []string{"agent"}, nil)
	descFlows = prometheus.NewDesc("clawnet_flows_total",
		"Flows decided for the agent, by verdict, protocol and direction (out: the agent's own; in: to one of its ports). An allowed flow whose upstream could not be reached counts as allow and in clawnet_flow_failures_total.",
		[]string{"agent", "verdict", "proto", "direction"}, nil)
	descFailures = prometheus.NewDesc("clawnet_flow_failures_total",
		"Allowed flows of the agent that could not be connected (the audit log's fail lines).", []string{"agent", "proto"}, nil)
	descDenies = prometheus.NewDesc("clawnet_denies_total",
		"Refusals of the agent's flows and DNS queries, by kind (flow, dns) and reason: the rule's class (builtin:NAME, default, policy:KIND).",
		[]string{"agent", "kind", "reason"}, nil)
	descRevoked = prometheus.NewDesc("clawnet_flows_revoked_total",
		"Live flows of the agent closed because a changed policy no longer allows them.", []string{"agent"}, nil)
	descDNS = prometheus.NewDesc("clawnet_dns_queries_total",
		"DNS queries of the agent by verdict and the answer's rcode (none: dropped unanswered).", []string{"agent", "verdict", "rcode"}, nil)
	descAuditLines = prometheus.NewDesc("clawnet_audit_lines_total",
		"Audit lines written.", nil, nil)
	descAuditErrors = prometheus.NewDesc("clawnet_audit_write_errors_total",
		"Audit lines lost because they could not be written (disk full, a closed file); each is reported in the daemon's log.", nil, nil)
	descAuditReopens = prometheus.NewDesc("clawnet_audit_reopens_total",
		"Reopens of the audit log (SIGUSR1, every policy reload), by result.", []string{"result"}, nil)
	descConns = prometheus.NewDesc("clawnet_listener_connections",
		"Connections served now, by listener (control: the control socket; metrics: metrics.listen).", []string{"listener"}, nil)
	descConnsMax = prometheus.NewDesc("clawnet_listener_connections_max",
		"The most connections a listener serves at once (control.max_connections).", []string{"listener"}, nil)
	descEvicted = prometheus.NewDesc("clawnet_listener_connections_evicted_total",
		"Idle connections closed to make room for a new one at the cap.", []string{"listener"}, nil)

	seriesDescs = map[agentSeries]*prometheus.Desc{
		seriesFlows: descFlows, seriesFailures: descFailures, seriesDenies: descDenies,
		seriesRevoked: descRevoked, seriesDNS: descDNS,
	}
)

// collector reads the series that are state rather than events: the
// attached agents and their counts, the audit log's and the listeners'
// counters.
type collector struct {
	g *Gateway
	m *metrics
}

var _ prometheus.Collector = (*collector)(nil)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAgents, descAgentInfo, descLive, descBytesUp, descBytesDown,
		descAuditLines, descAuditErrors, descAuditReopens, descConns, descConnsMax, descEvicted} {
		ch <- d
	}
	for _, d := range seriesDescs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	as := c.g.attached()
	ch <- prometheus.MustNewConstMetric(descAgents, prometheus.GaugeValue, float64(len(as)))
	for _, a := range as {
		ch <- prometheus.MustNewConstMetric(descAgentInfo, prometheus.GaugeValue, 1, a.name, a.policy)
		ch <- prometheus.MustNewConstMetric(descLive, prometheus.GaugeValue, float64(a.nflows.Load()), a.name)
		ch <- prometheus.MustNewConstMetric(descBytesUp, prometheus.CounterValue, float64(a.bytesUp.Load()), a.name)
		ch <- prometheus.MustNewConstMetric(descBytesDown, prometheus.CounterValue, float64(a.bytesDown.Load()), a.name)
		counts := a.audit.counts.snapshot()
		if _, ok := counts[countKey{series: seriesRevoked}]; !ok {
			// Present from attach, so that the first revoke shows as an
			// increase.
			counts[countKey{series: seriesRevoked}] = 0
		}
		for k, v := range counts {
			labels := []string{a.name}
			switch k.series {
			case seriesFlows:
				labels = append(labels, k.l1, k.l2, k.l3)
			case seriesFailures:
				labels = append(labels, k.l1)
			case seriesDenies, seriesDNS:
				labels = append(labels, k.l1, k.l2)
			}
			ch <- prometheus.MustNewConstMetric(seriesDescs[k.series], prometheus.CounterValue, float64(v), labels...)
		}
	}
	st := c.g.audit.Stats()
	ch <- prometheus.MustNewConstMetric(descAuditLines, prometheus.CounterValue, float64(st.Lines))
	ch <- prometheus.MustNewConstMetric(descAuditErrors, prometheus.CounterValue, float64(st.Errors))
	ch <- prometheus.MustNewConstMetric(descAuditReopens, prometheus.CounterValue, float64(st.Reopens), resultOK)
	ch <- prometheus.MustNewConstMetric(descAuditReopens, prometheus.CounterValue, float64(st.ReopenErrors), resultErr)
	c.m.mu.Lock()
	for name, l := range c.m.listeners {
		ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(l.live.Load()), name)
		ch <- prometheus.MustNewConstMetric(descConnsMax, prometheus.GaugeValue, float64(cap(l.slots)), name)
		ch <- prometheus.MustNewConstMetric(descEvicted, prometheus.CounterValue, float64(l.evicted.Load()), name)
	}
	c.m.mu.Unlock()
}

// attached lists the agents attached now (not those still attaching).
func (g *Gateway) attached() []*Agent {
	g.mu.Lock()
	defer g.mu.Unlock()
	as := make([]*Agent, 0, len(g.agents))
	for _, a := range g.agents {
		if a != nil {
			as = append(as, a)
		}
	}
	return as
}
