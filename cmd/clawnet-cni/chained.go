package main

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// clearNetns removes every interface but lo from the network namespace at
// path, and with them their addresses and routes: what the cluster's plugin
// made for a pod that turned out to be an agent pod. A veth goes with its
// peer on the node; a link that cannot be deleted (a physical device moved
// into the pod) is moved back to the node's namespace. Whatever is left
// makes the error, and clawnetd's own check (only lo) would refuse it too.
func clearNetns(path string) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer target.Close()
	h, err := netlink.NewHandleAt(target)
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", path, err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return fmt.Errorf("list interfaces in %s: %w", path, err)
	}
	var errs []error
	for _, l := range links {
		a := l.Attrs()
		if a.Name == "lo" {
			continue
		}
		err := h.LinkDel(l)
		if err == nil || errors.Is(err, unix.ENODEV) {
			// ENODEV: gone with its veth peer in between.
			continue
		}
		if merr := moveToHost(h, l); merr != nil {
			errs = append(errs, fmt.Errorf("%s: delete: %v; move to the node: %v", a.Name, err, merr))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	links, err = h.LinkList()
	if err != nil {
		return fmt.Errorf("list interfaces in %s: %w", path, err)
	}
	var left []string
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			left = append(left, l.Attrs().Name)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("interfaces %v are still in %s", left, path)
	}
	return nil
}

// moveToHost moves l into the namespace the plugin runs in, the node's.
func moveToHost(h *netlink.Handle, l netlink.Link) error {
	host, err := netns.Get()
	if err != nil {
		return err
	}
	defer host.Close()
	return h.LinkSetNsFd(l, int(host))
}

// hostHas says whether the node's namespace (the plugin's) has an
// interface called name.
func hostHas(name string) bool {
	_, err := net.InterfaceByName(name)
	return err == nil
}

// keepHostInterfaces adds to res, after the TUN, the node-side interfaces
// of prev (those with no sandbox: a bridge, a veth's node end) that are
// still there once the pod's own interfaces went, so that a plugin after
// this one still sees the bridge the cluster's plugin made. The pod-side
// interfaces, and with them prev's addresses and routes, are gone.
func (p *plugin) keepHostInterfaces(res *current.Result, prevResult types.Result) error {
	prev, err := current.NewResultFromResult(prevResult)
	if err != nil {
		return fmt.Errorf("prevResult: %w", err)
	}
	for _, i := range prev.Interfaces {
		if i.Sandbox != "" || !p.hostHas(i.Name) || slices.ContainsFunc(res.Interfaces, func(j *current.Interface) bool { return j.Name == i.Name && j.Sandbox == "" }) {
			continue
		}
		res.Interfaces = append(res.Interfaces, i)
	}
	return nil
}
