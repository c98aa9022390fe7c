package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/clawnet/clawnet/gateway/control"
)

// daemon is what the plugin needs of clawnetd's control API.
type daemon interface {
	Attach(ctx context.Context, req control.AttachRequest) (*control.Agent, error)
	Detach(ctx context.Context, name string) error
	Agents(ctx context.Context) ([]control.Agent, error)
	PodPolicy(ctx context.Context, pod control.PodRef) (string, error)
}

var _ daemon = (*control.Client)(nil)

// zeroMAC is the TUN's MAC in results: a TUN has none, and podman 4.3
// refuses an interface in a sandbox without a parsable one.
const zeroMAC = "00:00:00:00:00:00"

// callTimeout bounds each command's talk with clawnetd (an attach takes
// milliseconds; a daemon that does not answer in this long is stuck).
const callTimeout = 30 * time.Second

// plugin carries out the CNI commands.
type plugin struct {
	stdout io.Writer
	// dial returns the daemon behind a control socket.
	dial func(socket string) daemon
	// clearNetns removes every interface but lo from the namespace at a
	// path (chained mode).
	clearNetns func(path string) error
	// hostHas says whether the node's namespace has an interface of that
	// name (chained mode: which of prevResult's host-side interfaces are
	// still there).
	hostHas func(name string) bool
}

func newPlugin(stdout io.Writer) *plugin {
	return &plugin{
		stdout:     stdout,
		dial:       func(s string) daemon { return control.NewClient(s) },
		clearNetns: clearNetns,
		hostHas:    hostHas,
	}
}

func (p *plugin) funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: p.add, Del: p.del, Check: p.check}
}

// add attaches the container's namespace to clawnetd as an agent and
// answers the TUN as CNI_IFNAME. It fails closed: without clawnetd there is
// no attachment, and the runtime does not start the pod. In chained mode a
// pod that is not an agent pod gets prevResult back untouched; an agent pod
// first loses every interface the plugins before this one made.
func (p *plugin) add(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	switch {
	case conf.PrevResult != nil && !conf.Chained:
		return types.NewError(types.ErrInvalidNetworkConfig,
			"clawnet-cni must be the first plugin of its network (chained after another plugin, the pod would have a way around the gateway); set \"chained\": true to run it after the cluster's plugin", "")
	case conf.PrevResult == nil && conf.Chained:
		return types.NewError(types.ErrInvalidNetworkConfig,
			"chained: clawnet-cni runs after the cluster's own plugin, but no plugin ran before it (no prevResult); put it last in the plugin list, or drop chained", "")
	}
	pa, err := parsePodArgs(args.Args)
	if err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	name := agentName(pa, args.ContainerID)
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	d := p.dial(conf.Socket)
	pod := podRef(pa)
	policy, agentPod, err := p.policyOf(ctx, d, conf, pod)
	if err != nil {
		return err
	}
	if !agentPod {
		// Chained, and not an agent pod: the cluster's network as it is.
		out, err := conf.PrevResult.GetAsVersion(conf.CNIVersion)
		if err != nil {
			return err
		}
		return out.PrintTo(p.stdout)
	}
	path := recordPath(conf, args.ContainerID, args.IfName)
	if old, ok, err := readRecord(path); err != nil {
		return err
	} else if ok {
		if a, err := find(ctx, d, old); err != nil {
			return daemonError("list agents", err)
		} else if a != nil {
			return fmt.Errorf("container %s is attached already, as agent %s in %s; DEL it first", args.ContainerID, a.Name, a.Netns)
		}
	}
	// The record comes first: whatever happens after, DEL knows what to
	// detach.
	rec := record{Agent: name, Netns: args.Netns}
	if err := writeRecord(path, rec); err != nil {
		return err
	}
	if conf.Chained {
		// clawnetd refuses a namespace with any interface but lo, so a
		// link left behind here fails the attach rather than open a way
		// around the gateway.
		if err := p.clearNetns(args.Netns); err != nil {
			_ = removeRecord(path)
			return fmt.Errorf("chained: remove the interfaces the cluster's plugin made in %s: %w", args.Netns, err)
		}
	}
	a, err := d.Attach(ctx, control.AttachRequest{Netns: args.Netns, Name: name, Policy: policy, Interface: args.IfName, Pod: pod})
	if err != nil {
		_ = removeRecord(path)
		return daemonError(fmt.Sprintf("attach %s as agent %s", args.Netns, name), err)
	}
	out, err := p.result(conf, a, args)
	if err != nil {
		_ = d.Detach(ctx, a.Name)
		_ = removeRecord(path)
		return err
	}
	return out.PrintTo(p.stdout)
}

// result is ADD's answer for agent a, attached for args, in the
// configuration's version: its TUN, and in chained mode the node-side
// interfaces of prevResult that are still there.
func (p *plugin) result(conf *netConf, a *control.Agent, args *skel.CmdArgs) (types.Result, error) {
	if a.Interface != args.IfName {
		// An older clawnetd names every TUN after its network.interface.
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("clawnetd named the TUN %q, but the runtime wants %q (CNI_IFNAME): set network.interface: %s in clawnetd's config", a.Interface, args.IfName, args.IfName), "")
	}
	res, err := resultOf(a, args.Netns)
	if err != nil {
		return nil, err
	}
	if conf.Chained {
		if err := p.keepHostInterfaces(res, conf.PrevResult); err != nil {
			return nil, err
		}
	}
	return res.GetAsVersion(conf.CNIVersion)
}

// podRef names the Kubernetes pod of the CNI_ARGS, nil when the runtime
// names no namespace and pod (podman names no namespace).
func podRef(a podArgs) *control.PodRef {
	if a.K8S_POD_NAMESPACE == "" || a.K8S_POD_NAME == "" {
		return nil
	}
	return &control.PodRef{Namespace: string(a.K8S_POD_NAMESPACE), Name: string(a.K8S_POD_NAME), UID: string(a.K8S_POD_UID)}
}

// policyOf decides whether the pod is attached and under which policy ("":
// clawnetd decides, through its pod policy source, else default_policy).
//
// clawnetd's pod policy source comes first whenever the plugin has reason
// to ask (the pod is annotated, the network names a policy, or it runs
// chained): with an API server it reads the same clawnet.dev/policy
// annotation, as the name of an AgentNetworkPolicy in the pod's namespace,
// then the namespace's default. Then the annotation as the runtime passed
// it (a node without an API server: it names a policy file), then the
// network's policy. In chained mode a pod is an agent pod only when its
// annotation or clawnetd names a policy; clawnetd not answering fails the
// ADD of every pod (closed: an agent pod must not start on the cluster's
// network).
func (p *plugin) policyOf(ctx context.Context, d daemon, conf *netConf, pod *control.PodRef) (policy string, agentPod bool, err error) {
	ann, annotated, err := conf.podAnnotation()
	if err != nil {
		return "", false, types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	if !annotated && !conf.Chained && (conf.Policy == "" || pod == nil) {
		// Nothing to weigh here: clawnetd resolves the pod at attach.
		return conf.Policy, true, nil
	}
	var fromDaemon string
	if pod != nil {
		fromDaemon, err = d.PodPolicy(ctx, *pod)
	} else if conf.Chained {
		// No pod to ask about; still, nothing starts while clawnetd does
		// not answer.
		_, err = d.Agents(ctx)
	}
	if err != nil {
		what := "reach clawnetd"
		if pod != nil {
			what = fmt.Sprintf("ask clawnetd for the policy of pod %s/%s", pod.Namespace, pod.Name)
		}
		return "", false, daemonError(what, err)
	}
	switch {
	case fromDaemon != "":
		return fromDaemon, true, nil
	case annotated:
		return ann, true, nil
	case conf.Chained:
		return "", false, nil
	}
	return conf.Policy, true, nil
}

// del detaches the container's agent. It succeeds whenever nothing is left
// attached for the container: called twice, without CNI_NETNS or
// prevResult, after clawnetd lost the agent, or with clawnetd gone (a
// failing DEL would block the pod's removal for good).
func (p *plugin) del(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	path := recordPath(conf, args.ContainerID, args.IfName)
	// A record that cannot be read must not block the pod's removal: the
	// namespace, when the runtime names it, still finds the agent.
	rec, recorded, recErr := readRecord(path)
	if !recorded && recErr == nil && (conf.Chained || args.Netns == "") {
		// Nothing recorded, and nothing to look for: chained, a pod of
		// the cluster's network; or no namespace named (containerd's
		// second DEL, after the first one detached). Its removal must
		// not wait for clawnetd.
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	d := p.dial(conf.Socket)
	ours := func(a control.Agent) bool {
		// The namespace the runtime is tearing down, or the one recorded:
		// never an agent of the same name in another sandbox's namespace.
		return (recorded && a.Name == rec.Agent && a.Netns == rec.Netns) ||
			(args.Netns != "" && a.Netns == args.Netns)
	}
	agents, err := d.Agents(ctx)
	if errors.Is(err, control.ErrNoDaemon) {
		// Nothing runs that could hold the namespace. The record stays, so
		// that a DEL after clawnetd is back can still detach what it
		// restores.
		return nil
	}
	if err != nil {
		return daemonError("list agents", err)
	}
	for _, a := range agents {
		if !ours(a) {
			continue
		}
		if err := d.Detach(ctx, a.Name); err != nil {
			// Gone in between is as good as detached.
			if now, lerr := d.Agents(ctx); lerr != nil || slices.ContainsFunc(now, func(b control.Agent) bool { return b.Name == a.Name && ours(b) }) {
				return daemonError("detach agent "+a.Name, err)
			}
		}
	}
	return removeRecord(path)
}

// check verifies that the container's agent is attached in its namespace
// with the interface and addresses the runtime was given.
func (p *plugin) check(args *skel.CmdArgs) error {
	conf, err := parseConf(args.StdinData)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, err.Error(), "")
	}
	if conf.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult", "")
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return types.NewError(types.ErrDecodingFailure, fmt.Sprintf("prevResult: %v", err), "")
	}
	rec, ok, err := readRecord(recordPath(conf, args.ContainerID, args.IfName))
	if err != nil {
		return err
	}
	if !ok && conf.Chained {
		// A pod ADD passed through: the cluster's plugins check it.
		return nil
	}
	if !ok {
		return fmt.Errorf("no attachment recorded for container %s, interface %s", args.ContainerID, args.IfName)
	}
	if rec.Netns != args.Netns {
		return fmt.Errorf("container %s was attached in %s, not %s", args.ContainerID, rec.Netns, args.Netns)
	}
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	a, err := find(ctx, p.dial(conf.Socket), rec)
	if err != nil {
		return daemonError("list agents", err)
	}
	if a == nil {
		return fmt.Errorf("agent %s is not attached in %s (clawnetd lost it)", rec.Agent, rec.Netns)
	}
	if a.Interface != args.IfName {
		return fmt.Errorf("agent %s has interface %s, not %s", a.Name, a.Interface, args.IfName)
	}
	var want, got []string
	for _, ip := range prev.IPs {
		want = append(want, ip.Address.String())
	}
	got = append(got, a.Addresses...)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		return fmt.Errorf("agent %s has addresses %v; the runtime was given %v", a.Name, got, want)
	}
	return nil
}

// find returns the agent rec names if it is attached in rec's namespace.
func find(ctx context.Context, d daemon, rec record) (*control.Agent, error) {
	agents, err := d.Agents(ctx)
	if err != nil {
		return nil, err
	}
	for _, a := range agents {
		if a.Name == rec.Agent && a.Netns == rec.Netns {
			return &a, nil
		}
	}
	return nil, nil
}

// daemonError says what failed talking to clawnetd; a daemon that is not
// running is worth a retry (the spec's "try again later").
func daemonError(what string, err error) error {
	if errors.Is(err, control.ErrNoDaemon) {
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("%s: %v", what, err), "")
	}
	return fmt.Errorf("%s: %w", what, err)
}

// resultOf describes the agent's TUN as a CNI result: one interface in the
// sandbox, its addresses with the gateway of their family, a default route
// per family through the TUN (on-link: the TUN is point to point), and the
// gateway as the resolver (clawnetd answers DNS on any address).
func resultOf(a *control.Agent, netns string) (*current.Result, error) {
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{{Name: a.Interface, Mac: zeroMAC, Sandbox: netns}},
	}
	var gws []netip.Addr
	for _, s := range a.Gateway {
		g, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("clawnetd answered a bad gateway %q: %w", s, err)
		}
		gws = append(gws, g)
	}
	for _, s := range a.Addresses {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("clawnetd answered a bad address %q: %w", s, err)
		}
		bits := p.Addr().BitLen()
		ip := &current.IPConfig{
			Interface: current.Int(0),
			Address:   net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), bits)},
		}
		for _, g := range gws {
			if g.Is4() == p.Addr().Is4() {
				ip.Gateway = g.AsSlice()
				r.DNS.Nameservers = append(r.DNS.Nameservers, g.String())
				break
			}
		}
		r.IPs = append(r.IPs, ip)
		r.Routes = append(r.Routes, &types.Route{Dst: net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)}})
	}
	if len(r.IPs) == 0 {
		return nil, fmt.Errorf("clawnetd gave agent %s no address", a.Name)
	}
	return r, nil
}
