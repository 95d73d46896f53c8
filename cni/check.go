package cni

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/netlinksafe"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/petrelnet/petrel/internal/rtproto"
	"github.com/petrelnet/petrel/ipam"
)

// Check compares the attachment in the kernel and in the store with
// prevResult and reports every difference it finds in one error.
func Check(args *skel.CmdArgs) error {
	conf, cerr := ParseConfig(args.StdinData)
	if cerr != nil {
		return cerr
	}
	if err := version.ParsePrevResult(&conf.PluginConf); err != nil || conf.PrevResult == nil {
		return errf(types.ErrInvalidNetworkConfig, "prevResult: required for CHECK and must decode (%v)", err)
	}
	prev, err := current.NewResultFromResult(conf.PrevResult)
	if err != nil {
		return errf(types.ErrDecodingFailure, "prevResult: %v", err)
	}
	var addrs []netip.Addr
	for _, ipc := range prev.IPs {
		if a, ok := netip.AddrFromSlice(ipc.Address.IP); ok {
			addrs = append(addrs, a.Unmap())
		}
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return errf(types.ErrUnknownContainer, "pod network namespace %s: %v", args.Netns, err)
	}
	defer podNS.Close()

	var problems []string
	problems = append(problems, checkStore(conf, args, addrs)...)
	problems = append(problems, checkPod(int(podNS.Fd()), args.IfName, macOf(prev, args.IfName), addrs)...)
	host := HostVethName(args.ContainerID, args.IfName)
	problems = append(problems, checkHost(host, macOf(prev, host), addrs)...)
	if len(problems) > 0 {
		return errf(ErrCheckFailed, "attachment %s/%s differs from prevResult: %s", args.ContainerID, args.IfName, strings.Join(problems, "; "))
	}
	return nil
}

func macOf(r *current.Result, name string) string {
	for _, i := range r.Interfaces {
		if i.Name == name {
			return i.Mac
		}
	}
	return ""
}

func checkStore(conf *Config, args *skel.CmdArgs, want []netip.Addr) []string {
	if conf.Delegated() {
		return nil // the IPAM plugin's CHECK is the runtime's business in a chain
	}
	s, err := ipam.Open(conf.IPAM.DataDir, conf.LockTimeout)
	if err != nil {
		return []string{"ipam store: " + err.Error()}
	}
	defer s.Close()
	as, err := s.Get(ownerOf(conf, args))
	if err != nil {
		return []string{"ipam store: " + err.Error()}
	}
	var have []netip.Addr
	for _, a := range as {
		have = append(have, a.IP)
	}
	if !sameAddrs(have, want) {
		return []string{fmt.Sprintf("ipam store holds %v, want %v", have, want)}
	}
	return nil
}

func checkPod(fd int, ifName, mac string, addrs []netip.Addr) []string {
	h, err := netlinksafe.NewHandleAt(netns.NsHandle(fd), unix.NETLINK_ROUTE)
	if err != nil {
		return []string{"netlink in pod namespace: " + err.Error()}
	}
	defer h.Close()
	link, err := h.LinkByName(ifName)
	if err != nil {
		return []string{fmt.Sprintf("pod interface %s: %v", ifName, err)}
	}
	var p []string
	if mac != "" && link.Attrs().HardwareAddr.String() != mac {
		p = append(p, fmt.Sprintf("pod interface %s has MAC %s, want %s", ifName, link.Attrs().HardwareAddr, mac))
	}
	have, err := h.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return append(p, fmt.Sprintf("addresses of %s: %v", ifName, err))
	}
	for _, a := range addrs {
		if !slices.ContainsFunc(have, func(x netlink.Addr) bool { return x.IPNet.String() == hostNet(a).String() }) {
			p = append(p, fmt.Sprintf("pod address %s missing on %s", hostNet(a), ifName))
		}
	}
	routes, err := h.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return append(p, fmt.Sprintf("routes of %s: %v", ifName, err))
	}
	for _, gw := range gatewaysFor(addrs) {
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool { return isDefault(r) && net.IP.Equal(r.Gw, gw.AsSlice()) }) {
			p = append(p, fmt.Sprintf("pod default route via %s missing", gw))
		}
	}
	return p
}

func checkHost(name, mac string, addrs []netip.Addr) []string {
	link, err := netlinksafe.LinkByName(name)
	if err != nil {
		return []string{fmt.Sprintf("host veth %s: %v", name, err)}
	}
	var p []string
	if mac != "" && link.Attrs().HardwareAddr.String() != mac {
		p = append(p, fmt.Sprintf("host veth %s has MAC %s, want %s", name, link.Attrs().HardwareAddr, mac))
	}
	routes, err := netlinksafe.RouteList(link, netlink.FAMILY_ALL)
	if err != nil {
		return append(p, fmt.Sprintf("routes of %s: %v", name, err))
	}
	for _, a := range addrs {
		dst := hostNet(a)
		if !slices.ContainsFunc(routes, func(r netlink.Route) bool {
			return r.Dst != nil && r.Dst.String() == dst.String() && r.Protocol == rtproto.Pod
		}) {
			p = append(p, fmt.Sprintf("host route %s dev %s missing", dst, name))
		}
	}
	return p
}

func isDefault(r netlink.Route) bool {
	if r.Dst == nil {
		return true
	}
	ones, _ := r.Dst.Mask.Size()
	return ones == 0
}

func sameAddrs(a, b []netip.Addr) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	cmp := func(x, y netip.Addr) int { return x.Compare(y) }
	slices.SortFunc(a, cmp)
	slices.SortFunc(b, cmp)
	return slices.Equal(a, b)
}
