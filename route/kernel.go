package route

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel is the main routing table of one network namespace, seen through
// one rtm_protocol.
type Kernel struct {
	h     *netlink.Handle   // dumps
	batch *nl.NetlinkSocket // batched changes (Apply: never concurrent)
	proto netlink.RouteProtocol
	seq   uint32 // the next batch's first sequence number
	buf   []byte // the last batch's, reused
}

var _ Table = (*Kernel)(nil)

// OpenKernel returns the table of namespace ns; netns.None() is the
// caller's own.
func OpenKernel(ns netns.NsHandle, proto int) (*Kernel, error) {
	var h *netlink.Handle
	var s *nl.NetlinkSocket
	var err error
	if ns.IsOpen() {
		h, err = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		if err == nil {
			s, err = nl.GetNetlinkSocketAt(ns, netns.None(), unix.NETLINK_ROUTE)
		}
	} else {
		h, err = netlink.NewHandle(unix.NETLINK_ROUTE)
		if err == nil {
			s, err = nl.Subscribe(unix.NETLINK_ROUTE) // a plain socket: no groups given
		}
	}
	if err == nil {
		// Every error of a batch (each a failed request: a held prefix) is
		// queued before the first is read, and a small skb still costs
		// ~1 KiB of buffer: make room, or they are dropped. The timeout
		// keeps a lost acknowledgement from hanging the loop.
		err = s.SetReceiveBufferSize(batchSize*2048, true)
	}
	if err == nil {
		err = s.SetReceiveTimeout(&unix.Timeval{Sec: 10})
	}
	if err != nil {
		if h != nil {
			h.Close()
		}
		if s != nil {
			s.Close()
		}
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return &Kernel{h: h, batch: s, proto: netlink.RouteProtocol(proto)}, nil
}

// Close releases the sockets.
func (k *Kernel) Close() {
	k.h.Close()
	k.batch.Close()
}

// List returns every route of Petrel's protocol in the main table.
func (k *Kernel) List() ([]Route, error) {
	filter := &netlink.Route{Protocol: k.proto, Table: unix.RT_TABLE_MAIN}
	var rs []netlink.Route
	var err error
	// A dump that races a route change comes back marked interrupted and
	// possibly incomplete; a diff against it could delete live routes, so
	// retry until one dump is consistent.
	for range 5 {
		rs, err = k.h.RouteListFiltered(netlink.FAMILY_ALL, filter, netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	out := make([]Route, 0, len(rs))
	for _, r := range rs {
		out = append(out, fromNetlink(r))
	}
	return out, nil
}

func fromNetlink(r netlink.Route) Route {
	var out Route
	if r.Dst != nil {
		p, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		out.Prefix = netip.PrefixFrom(p.Unmap(), ones)
	}
	out.Blackhole = r.Type == unix.RTN_BLACKHOLE
	if a, ok := netip.AddrFromSlice(r.Gw); ok {
		out.NextHops = append(out.NextHops, a.Unmap())
	}
	for _, nh := range r.MultiPath {
		if a, ok := netip.AddrFromSlice(nh.Gw); ok {
			out.NextHops = append(out.NextHops, a.Unmap())
		}
	}
	return out
}

// Resolve asks the kernel which route it would use for nh (the FIB entry
// itself, RTM_F_FIB_MATCH, so that its protocol and type are known).
func (k *Kernel) Resolve(nh netip.Addr) ([]netip.Addr, error) {
	rs, err := k.h.RouteGetWithOptions(nh.AsSlice(), &netlink.RouteGetOptions{FIBMatch: true})
	if err != nil || len(rs) == 0 {
		return nil, errUnreachable
	}
	r := rs[0]
	switch {
	case r.Type == unix.RTN_LOCAL:
		return nil, errLocal
	case r.Type != unix.RTN_UNICAST:
		return nil, fmt.Errorf("reached by a route of type %d (blackhole, unreachable or prohibit)", r.Type)
	case r.Protocol == k.proto:
		return nil, errOwnRoute
	}
	var via []netip.Addr
	for _, p := range r.MultiPath {
		via = append(via, gatewayOr(p.Gw, nh))
	}
	if len(via) == 0 {
		via = []netip.Addr{gatewayOr(r.Gw, nh)}
	}
	return via, nil
}

// gatewayOr is the gateway of a path, or nh when the path is on-link.
func gatewayOr(gw net.IP, nh netip.Addr) netip.Addr {
	if a, ok := netip.AddrFromSlice(gw); ok && !a.IsUnspecified() {
		return a.Unmap()
	}
	return nh
}
