package fib

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel is the main routing table of one network namespace, seen through
// one rtm_protocol.
type Kernel struct {
	h     *netlink.Handle
	proto netlink.RouteProtocol
}

var _ Table = (*Kernel)(nil)

// NewKernel returns the table of the namespace h is bound to (a handle from
// netlink.NewHandleAt, or netlink.NewHandle for the caller's own).
func NewKernel(h *netlink.Handle, proto int) *Kernel {
	return &Kernel{h: h, proto: netlink.RouteProtocol(proto)}
}

// OpenKernel returns the table of the caller's own namespace.
func OpenKernel(proto int) (*Kernel, error) {
	h, err := netlink.NewHandle(unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	return NewKernel(h, proto), nil
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

func (k *Kernel) toNetlink(r Route) *netlink.Route {
	bits := r.Prefix.Addr().BitLen()
	nr := &netlink.Route{
		Dst:      &net.IPNet{IP: r.Prefix.Addr().AsSlice(), Mask: net.CIDRMask(r.Prefix.Bits(), bits)},
		Protocol: k.proto,
		Table:    unix.RT_TABLE_MAIN,
	}
	switch {
	case r.Blackhole:
		nr.Type = unix.RTN_BLACKHOLE
	case len(r.NextHops) == 1:
		nr.Gw = r.NextHops[0].AsSlice()
	default:
		for _, nh := range r.NextHops {
			nr.MultiPath = append(nr.MultiPath, &netlink.NexthopInfo{Gw: nh.AsSlice()})
		}
	}
	return nr
}

// Replace installs r, replacing any route of the same prefix and metric.
func (k *Kernel) Replace(r Route) error {
	return k.h.RouteReplace(k.toNetlink(r))
}

// Delete removes r; a route already gone is success.
func (k *Kernel) Delete(r Route) error {
	nr := k.toNetlink(r)
	nr.Gw, nr.MultiPath, nr.Type = nil, nil, 0 // match by prefix, protocol and table
	if nr.Dst != nil && r.Blackhole {
		nr.Type = unix.RTN_BLACKHOLE
	}
	err := k.h.RouteDel(nr)
	if errors.Is(err, unix.ESRCH) {
		return nil
	}
	return err
}

// Watch calls poke when a route of Petrel's protocol is deleted, or a route
// of another protocol appears (it may have replaced one of Petrel's), so the
// caller's loop resyncs within moments instead of at the next periodic full
// sync. Petrel's own installs do not poke, so a sync does not wake itself.
// A subscription error also pokes: events may have been lost.
//
// Watch returns once the subscription is live; stop ends it. ns is the
// namespace to watch, netns.None() for the caller's own. poke must not block.
func Watch(ns netns.NsHandle, proto int, poke func()) (stop func(), err error) {
	updates := make(chan netlink.RouteUpdate, 64)
	done := make(chan struct{})
	opts := netlink.RouteSubscribeOptions{ErrorCallback: func(error) { poke() }}
	if ns.IsOpen() {
		opts.Namespace = &ns
	}
	if err := netlink.RouteSubscribeWithOptions(updates, done, opts); err != nil {
		return nil, fmt.Errorf("subscribe to route changes: %w", err)
	}
	go func() {
		for u := range updates {
			ours := u.Route.Protocol == netlink.RouteProtocol(proto)
			if (u.Type == unix.RTM_DELROUTE && ours) || (u.Type == unix.RTM_NEWROUTE && !ours) {
				poke()
			}
		}
	}()
	return func() { close(done) }, nil
}
