// Package tun creates and configures the agent's TUN device inside the
// agent's network namespace, from outside it: the agent needs no capability
// and no tool. It knows namespaces and devices, never policy.
package tun

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
	wgtun "golang.zx2c4.com/wireguard/tun"
)

// Config describes the device to create.
type Config struct {
	// Name of the interface inside the namespace.
	Name string
	// MTU of the interface; large MTUs let the kernel hand over whole
	// 64 KiB segments.
	MTU int
	// Addrs are the agent's addresses, with the on-link prefix length.
	Addrs []netip.Prefix
	// Checksum opens the device with virtio-net headers (IFF_VNET_HDR) and
	// checksum offload (TUN_F_CSUM), so that a TCP or UDP checksum is
	// summed by neither side: a packet written to the agent can leave it
	// partial (WriteVectoredPartial), which the agent's kernel, delivering
	// locally, trusts; and the agent's kernel leaves it partial in the
	// packets it sends, which the gateway's stack never verifies.
	Checksum bool
}

// Device is a TUN device living in another namespace. Its packets are read
// and written through the embedded wireguard-go device; closing it removes
// the interface (the device is never persistent).
type Device struct {
	wgtun.Device
	// IfName and Index identify the interface inside its namespace.
	IfName string
	Index  int
	// IPv6 reports whether IPv6 addresses could be configured (a namespace
	// can have IPv6 disabled).
	IPv6 bool

	file *fileDevice // the embedded device, for WriteVectored
}

// vectorWriter is what netstack's link endpoint looks for to write a
// packet from its views without copying them first.
type vectorWriter interface {
	WriteVectored(parts [][]byte) error
}

var _ vectorWriter = (*Device)(nil)

// WriteVectored writes the concatenation of parts as one packet, with one
// writev(2). (The embedded interface does not promote it: without this
// method, the endpoint would never see the device's own.)
func (d *Device) WriteVectored(parts [][]byte) error {
	return d.file.WriteVectored(parts)
}

// PartialChecksum reports whether the device was opened with Checksum, so
// that WriteVectoredPartial writes.
func (d *Device) PartialChecksum() bool { return d.file.vnet }

// WriteVectoredPartial writes the concatenation of parts as one packet
// whose transport checksum is left partial: the checksum field, at
// csumOffset from csumStart, holds the pseudo-header's sum, and the rest is
// summed from csumStart on by whoever must. The device must have been
// opened with Checksum (PartialChecksum).
func (d *Device) WriteVectoredPartial(csumStart, csumOffset uint16, parts [][]byte) error {
	if !d.file.vnet {
		return errors.New("tun: partial checksum on a device opened without Checksum")
	}
	return d.file.writeVectoredHdr(vnetHdr(csumStart, csumOffset), parts)
}

// ErrExists is returned when the namespace already has an interface of the
// requested name.
var ErrExists = errors.New("interface already exists")

// Create makes a TUN device in ns, gives it cfg's addresses and MTU, default
// routes for both families, and brings it and lo up. It returns once the
// namespace's kernel takes packets to every address it gave as its own.
func Create(ns *Netns, cfg Config) (*Device, error) {
	var fd int
	err := ns.Do(func() error {
		if _, err := net.InterfaceByName(cfg.Name); err == nil {
			return fmt.Errorf("%s in %s: %w", cfg.Name, ns.Path(), ErrExists)
		}
		var err error
		fd, err = openTUN(cfg.Name, cfg.Checksum)
		return err
	})
	if err != nil {
		return nil, err
	}
	dev, err := newFileDevice(fd, cfg.Name, cfg.MTU, cfg.Checksum)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	d := &Device{Device: dev, IfName: cfg.Name, file: dev}
	if err := configure(ns, d, cfg); err != nil {
		dev.Close()
		return nil, err
	}
	return d, nil
}

// openTUN opens a TUN device in the calling thread's namespace. It carries
// IP packets, behind a virtio-net header when vnet is set, which is used
// for checksum offload only: with a 64 KiB MTU the kernel already hands
// over whole segments, so segmentation offload (GSO) would save nothing.
func openTUN(name string, vnet bool) (int, error) {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open /dev/net/tun: %w", err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("interface name %q: %w", name, err)
	}
	flags := uint16(unix.IFF_TUN | unix.IFF_NO_PI)
	if vnet {
		flags |= unix.IFF_VNET_HDR
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("create tun %s: %w", name, err)
	}
	if vnet {
		if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, unix.TUN_F_CSUM); err != nil {
			unix.Close(fd)
			return -1, fmt.Errorf("tun %s: checksum offload: %w", name, err)
		}
	}
	return fd, nil
}

func configure(ns *Netns, d *Device, cfg Config) error {
	h, err := netlink.NewHandleAt(netns.NsHandle(ns.Fd()))
	if err != nil {
		return fmt.Errorf("netlink in %s: %w", ns.Path(), err)
	}
	defer h.Close()
	link, err := h.LinkByName(d.IfName)
	if err != nil {
		return fmt.Errorf("find %s: %w", d.IfName, err)
	}
	d.Index = link.Attrs().Index
	if err := h.LinkSetMTU(link, cfg.MTU); err != nil {
		return fmt.Errorf("set mtu %d on %s: %w", cfg.MTU, d.IfName, err)
	}
	// A deep queue keeps bursts from the agent's kernel from being dropped
	// while the gateway is busy.
	_ = h.LinkSetTxQLen(link, 1000)
	if lo, err := h.LinkByName("lo"); err == nil {
		_ = h.LinkSetUp(lo)
	}
	has6 := false
	for _, p := range cfg.Addrs {
		if p.Addr().Is6() {
			has6 = true
		}
	}
	if has6 {
		// Container engines often disable IPv6 in namespaces without a
		// network; the TUN is the agent's only interface, so enable it there.
		d.IPv6 = ns.Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/"+d.IfName+"/disable_ipv6", []byte("0"), 0)
		}) == nil
	}
	for _, p := range cfg.Addrs {
		if p.Addr().Is6() && !d.IPv6 {
			continue
		}
		a := &netlink.Addr{IPNet: prefixToIPNet(p)}
		if p.Addr().Is6() {
			a.Flags = unix.IFA_F_NODAD
		}
		if err := h.AddrAdd(link, a); err != nil {
			if p.Addr().Is6() {
				d.IPv6 = false
				continue
			}
			return fmt.Errorf("add address %s to %s: %w", p, d.IfName, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return fmt.Errorf("bring %s up: %w", d.IfName, err)
	}
	for _, p := range cfg.Addrs {
		if p.Addr().Is6() && !d.IPv6 {
			continue
		}
		bits := 32
		if p.Addr().Is6() {
			bits = 128
		}
		dst := &net.IPNet{IP: make(net.IP, bits/8), Mask: net.CIDRMask(0, bits)}
		r := &netlink.Route{LinkIndex: d.Index, Dst: dst, Scope: netlink.SCOPE_UNIVERSE}
		if err := h.RouteAdd(r); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add default route via %s: %w", d.IfName, err)
		}
	}
	var local []netip.Addr
	for _, p := range cfg.Addrs {
		if p.Addr().Is4() || d.IPv6 {
			local = append(local, p.Addr())
		}
	}
	return waitLocal(h, local, localTimeout)
}

// localTimeout bounds the wait for the kernel to take an address as local.
// It waits on the rtnl lock, as every netlink request above does: only a
// kernel that is stuck gets near it.
const localTimeout = 10 * time.Second

// waitLocal waits until the kernel delivers packets addressed to each of
// addrs to its own sockets, that is until each has its route in the local
// table. An IPv4 address has it when the request that adds it returns. An
// IPv6 address does not: the kernel inserts its local route afterwards,
// from its address-configuration work queue (the step that ends duplicate
// address detection, taken even for an address with IFA_F_NODAD on a NOARP
// device), and that work needs the rtnl lock, which namespaces being set up
// or torn down elsewhere on the host hold for milliseconds or more. In the
// meantime the address is already on the interface, so the agent sends from
// it, but the kernel takes the gateway's answers to it for packets to
// forward and drops them (Ip6InAddrErrors): a datagram's reply is lost, a
// SYN is answered only by its retransmission a second later.
func waitLocal(h *netlink.Handle, addrs []netip.Addr, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	pause := 100 * time.Microsecond
	for _, a := range addrs {
		for {
			rs, err := h.RouteGet(net.IP(a.AsSlice()))
			if err == nil && len(rs) > 0 && rs[0].Type == unix.RTN_LOCAL {
				break
			}
			if time.Now().After(deadline) {
				if err == nil {
					err = errors.New("no local route")
				}
				return fmt.Errorf("address %s still not local after %v: %w", a, timeout, err)
			}
			time.Sleep(pause)
			pause = min(2*pause, 10*time.Millisecond)
		}
	}
	return nil
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// Links lists the interfaces of ns by name.
func Links(ns *Netns) ([]string, error) {
	h, err := netlink.NewHandleAt(netns.NsHandle(ns.Fd()))
	if err != nil {
		return nil, fmt.Errorf("netlink in %s: %w", ns.Path(), err)
	}
	defer h.Close()
	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links in %s: %w", ns.Path(), err)
	}
	names := make([]string, 0, len(links))
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	return names, nil
}
