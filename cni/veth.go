package cni

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/petrelnet/petrel/internal/rtproto"
)

// attachment is everything needed to wire one pod interface.
type attachment struct {
	network, containerID, ifName string
	netnsFd                      int
	mtu                          int
	addrs                        []netip.Addr
}

func (a *attachment) hostName() string { return HostVethName(a.containerID, a.ifName) }

// wired is what setup created, for the result.
type wired struct {
	hostName string
	hostMAC  net.HardwareAddr
	podMAC   net.HardwareAddr
}

// setup creates the veth with its peer born in the pod namespace (no move
// across namespaces), then configures the pod side and the host side. On
// error the caller removes the host veth, which takes the peer and every
// route through either end with it.
func setup(a *attachment) (wired, error) {
	w := wired{hostName: a.hostName(), hostMAC: hostVethMAC(a.containerID, a.ifName)}
	// A host veth of this name belongs to this very attachment (the name is
	// a hash of it): a repeated ADD replaces it.
	if err := removeHostVeth(w.hostName); err != nil {
		return w, err
	}
	veth := &netlink.Veth{
		LinkAttrs: netlink.LinkAttrs{
			Name: w.hostName, MTU: a.mtu, HardwareAddr: w.hostMAC,
			Alias: vethAlias(a.network, a.containerID, a.ifName), Flags: net.FlagUp,
		},
		PeerName:      a.ifName,
		PeerNamespace: netlink.NsFd(a.netnsFd),
	}
	if err := netlink.LinkAdd(veth); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return w, errf(types.ErrInvalidEnvironmentVariables, "interface %s already exists in the pod namespace", a.ifName)
		}
		return w, fmt.Errorf("create veth %s/%s: %w", w.hostName, a.ifName, err)
	}
	podMAC, err := setupPod(a, w.hostMAC)
	if err != nil {
		return w, err
	}
	w.podMAC = podMAC
	return w, setupHost(a, veth, podMAC)
}

// setupPod gives the pod interface its addresses and routes through the
// link-local gateways. The gateways get permanent neighbour entries with the
// host veth's MAC, so the pod's first packet never waits for ARP or ND.
func setupPod(a *attachment, hostMAC net.HardwareAddr) (net.HardwareAddr, error) {
	h, err := netlink.NewHandleAt(netns.NsHandle(a.netnsFd), unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in pod namespace: %w", err)
	}
	defer h.Close()
	link, err := h.LinkByName(a.ifName)
	if err != nil {
		return nil, fmt.Errorf("find %s in pod namespace: %w", a.ifName, err)
	}
	idx := link.Attrs().Index
	for _, ip := range a.addrs {
		// No duplicate address detection: the address is ours by allocation,
		// and DAD would hold IPv6 traffic for a second or more.
		addr := &netlink.Addr{IPNet: hostNet(ip), Flags: unix.IFA_F_NODAD}
		if err := h.AddrAdd(link, addr); err != nil {
			return nil, fmt.Errorf("add %s to %s: %w", ip, a.ifName, err)
		}
	}
	if err := h.LinkSetUp(link); err != nil {
		return nil, fmt.Errorf("set %s up: %w", a.ifName, err)
	}
	for _, gw := range gatewaysFor(a.addrs) {
		n := &netlink.Neigh{LinkIndex: idx, IP: gw.AsSlice(), HardwareAddr: hostMAC, State: netlink.NUD_PERMANENT, Family: family(gw)}
		if err := h.NeighAdd(n); err != nil {
			return nil, fmt.Errorf("neighbour %s on %s: %w", gw, a.ifName, err)
		}
		for _, r := range podRoutes(idx, gw) {
			err := h.RouteAdd(r)
			if errors.Is(err, unix.EEXIST) {
				return nil, errf(types.ErrInvalidEnvironmentVariables, "pod already has a route to %s on another interface: Petrel wires one interface per pod and network", r.Dst)
			}
			if err != nil {
				return nil, fmt.Errorf("pod route %s on %s: %w", r.Dst, a.ifName, err)
			}
		}
	}
	return link.Attrs().HardwareAddr, nil
}

// podRoutes are the routes inside the pod: the IPv4 gateway is made on-link
// by a /32 link route, the IPv6 one is link-local and needs none.
func podRoutes(idx int, gw netip.Addr) []*netlink.Route {
	if gw.Is4() {
		return []*netlink.Route{
			{LinkIndex: idx, Dst: hostNet(gw), Scope: netlink.SCOPE_LINK},
			{LinkIndex: idx, Dst: defaultNet(gw), Gw: gw.AsSlice()},
		}
	}
	return []*netlink.Route{{LinkIndex: idx, Dst: defaultNet(gw), Gw: gw.AsSlice()}}
}

// setupHost makes the host end answer for the gateways and routes each pod
// address to it. Each pod address gets a permanent neighbour entry: the
// first packet to a new pod (forwarded from another pod, whose ND solicit the
// new pod may not answer for up to a second) never waits for ARP or ND.
func setupHost(a *attachment, veth *netlink.Veth, podMAC net.HardwareAddr) error {
	idx := veth.Attrs().Index
	for _, gw := range gatewaysFor(a.addrs) {
		if gw.Is4() {
			if err := proxyARP(veth.Name); err != nil {
				return err
			}
			continue
		}
		addr := &netlink.Addr{IPNet: &net.IPNet{IP: gw.AsSlice(), Mask: net.CIDRMask(64, 128)}, Flags: unix.IFA_F_NODAD}
		if err := netlink.AddrAdd(veth, addr); err != nil {
			return fmt.Errorf("add gateway %s to %s: %w", gw, veth.Name, err)
		}
	}
	if err := enableForwarding(a.addrs); err != nil {
		return err
	}
	for _, ip := range a.addrs {
		n := &netlink.Neigh{LinkIndex: idx, IP: ip.AsSlice(), HardwareAddr: podMAC, State: netlink.NUD_PERMANENT, Family: family(ip)}
		if err := netlink.NeighAdd(n); err != nil {
			return fmt.Errorf("neighbour %s on %s: %w", ip, veth.Name, err)
		}
		r := hostRoute(idx, ip)
		if err := netlink.RouteAdd(r); err != nil {
			return fmt.Errorf("host route %s dev %s: %w", r.Dst, veth.Name, err)
		}
	}
	return nil
}

func hostRoute(idx int, ip netip.Addr) *netlink.Route {
	return &netlink.Route{LinkIndex: idx, Dst: hostNet(ip), Scope: netlink.SCOPE_LINK, Protocol: rtproto.Pod}
}

// removeHostVeth deletes a host veth by name; a missing one is success.
func removeHostVeth(name string) error {
	link, err := netlinksafe.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if errors.As(err, &nf) {
			return nil
		}
		return fmt.Errorf("look up %s: %w", name, err)
	}
	if err := netlink.LinkDel(link); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete %s: %w", name, err)
	}
	return nil
}

func gatewaysFor(addrs []netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, gw := range []netip.Addr{GatewayV4, GatewayV6} {
		for _, a := range addrs {
			if a.Is4() == gw.Is4() {
				out = append(out, gw)
				break
			}
		}
	}
	return out
}

func hostNet(ip netip.Addr) *net.IPNet {
	return &net.IPNet{IP: ip.AsSlice(), Mask: net.CIDRMask(ip.BitLen(), ip.BitLen())}
}

func defaultNet(ip netip.Addr) *net.IPNet {
	return &net.IPNet{IP: make(net.IP, ip.BitLen()/8), Mask: net.CIDRMask(0, ip.BitLen())}
}

func family(ip netip.Addr) int {
	if ip.Is4() {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}
