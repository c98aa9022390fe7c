package main

import (
	"fmt"
	"net"
	"os"
	"slices"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"
)

// podNS is a real network namespace with what a cluster's plugin leaves in
// it: eth0, one end of a veth whose other end is on the node, with an
// address and a default route.
type podNS struct {
	ns   ns.NetNS
	host string // the veth's node end
}

func newPodNS(t *testing.T) *podNS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: makes network namespaces and veths")
	}
	target, err := testutils.NewNS()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		target.Close()
		if err := testutils.UnmountNS(target); err != nil {
			t.Error(err)
		}
	})
	p := &podNS{ns: target, host: fmt.Sprintf("vcl%x", os.Getpid()%0xffffff)}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.host}, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(target.Fd()))}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatalf("veth: %v", err)
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(p.host); err == nil {
			netlink.LinkDel(l)
		}
	})
	err = target.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addr, _ := netlink.ParseAddr("10.244.7.3/24")
		if err := netlink.AddrAdd(l, addr); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
		return netlink.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("10.244.7.1"), Dst: nil})
	})
	if err != nil {
		t.Fatalf("set up eth0 in the pod: %v", err)
	}
	return p
}

// links are the interface names in the namespace.
func (p *podNS) links(t *testing.T) []string {
	t.Helper()
	var names []string
	err := p.ns.Do(func(ns.NetNS) error {
		ls, err := netlink.LinkList()
		for _, l := range ls {
			names = append(names, l.Attrs().Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(names)
	return names
}

// prevResult is what the cluster's plugin answered for p.
func (p *podNS) prevResult() string {
	return fmt.Sprintf(`{"cniVersion":"1.0.0","interfaces":[{"name":%q,"mac":"0a:58:0a:f4:00:02"},{"name":"eth0","mac":"0a:58:0a:f4:00:03","sandbox":%q}],`+
		`"ips":[{"interface":1,"address":"10.244.7.3/24","gateway":"10.244.7.1"}],"routes":[{"dst":"0.0.0.0/0","gw":"10.244.7.1"}]}`, p.host, p.ns.Path())
}

// realWorld is a world whose plugin works on real namespaces and writes to
// the process's stdout, as testutils captures it.
func realWorld(t *testing.T) *world {
	w := newWorld(t)
	w.p.clearNetns, w.p.hostHas = clearNetns, hostHas
	return w
}

func (w *world) realArgs(p *podNS, id, cniArgs string, conf []byte) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: id, Netns: p.ns.Path(), IfName: "eth0", Args: cniArgs, StdinData: conf}
}

// TestChainedClearsARealNamespace: an agent pod's eth0 (a veth with an
// address and a default route) is gone before the attach, and its node end
// with it; the result lists neither.
func TestChainedClearsARealNamespace(t *testing.T) {
	w := realWorld(t)
	p := newPodNS(t)
	conf := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"clawnet-cni","socket":%q,"dataDir":%q,"chained":true,"prevResult":%s,%s}`,
		w.d.socket, w.dataDir, p.prevResult(), annotations("clawnet.dev/policy", "coder")))
	args := w.realArgs(p, "s1", k8sArgs("agents", "a1", "s1"), conf)
	r, _, err := testutils.CmdAddWithArgs(args, func() error { return newPluginFrom(w.p).add(args) })
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if got := p.links(t); !slices.Equal(got, []string{"lo"}) {
		t.Errorf("interfaces in the pod after ADD = %q; want lo only (clawnetd then adds the TUN)", got)
	}
	if _, err := netlink.LinkByName(p.host); err == nil {
		t.Errorf("the veth's node end %s is still there", p.host)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Interfaces) != 1 || res.Interfaces[0].Name != "eth0" || res.Interfaces[0].Mac != zeroMAC {
		t.Errorf("result interfaces = %v; want only the TUN as eth0", res.Interfaces)
	}
	if req := w.d.lastAttach(); req.Netns != p.ns.Path() || req.Policy != "coder" {
		t.Errorf("attach = %+v; want %s under coder", req, p.ns.Path())
	}
	if err := testutils.CmdDelWithArgs(args, func() error { return newPluginFrom(w.p).del(args) }); err != nil {
		t.Errorf("DEL: %v", err)
	}
	w.wantAgents()
}

// TestChainedLeavesOtherPodsAlone: a pod that is not an agent pod keeps
// its eth0, its node end and the result of the cluster's plugin.
func TestChainedLeavesOtherPodsAlone(t *testing.T) {
	w := realWorld(t)
	p := newPodNS(t)
	conf := []byte(fmt.Sprintf(`{"cniVersion":"1.0.0","name":"k8s-pod-network","type":"clawnet-cni","socket":%q,"dataDir":%q,"chained":true,"prevResult":%s}`,
		w.d.socket, w.dataDir, p.prevResult()))
	args := w.realArgs(p, "web", k8sArgs("default", "web", "web"), conf)
	r, _, err := testutils.CmdAddWithArgs(args, func() error { return newPluginFrom(w.p).add(args) })
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if got := p.links(t); !slices.Equal(got, []string{"eth0", "lo"}) {
		t.Errorf("interfaces in the pod = %q; want eth0 and lo, untouched", got)
	}
	if _, err := netlink.LinkByName(p.host); err != nil {
		t.Errorf("the veth's node end %s: %v", p.host, err)
	}
	res, err := current.NewResultFromResult(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "10.244.7.3/24" || len(res.Interfaces) != 2 {
		t.Errorf("result = %+v; want the cluster plugin's", res)
	}
	if w.d.attachCount() != 0 {
		t.Errorf("%d attaches for a pod that is not an agent pod", w.d.attachCount())
	}
}

// newPluginFrom is p writing to the process's stdout, which testutils
// captures.
func newPluginFrom(p *plugin) *plugin {
	q := *p
	q.stdout = os.Stdout
	return &q
}
