package route

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Kernel is the main routing table of one network namespace, seen through
// one rtm_protocol.
type Kernel struct {
	h     *netlink.Handle   // dumps
	batch *nl.NetlinkSocket // batched changes
	proto netlink.RouteProtocol
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
		// Every ack of a batch is queued before the first is read, and a
		// small ack skb still costs ~1 KiB of buffer: make room, or acks are
		// dropped. The timeout keeps a lost ack from hanging the loop.
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

// Watch reports route changes made by others, so the caller's loop resyncs
// within moments instead of at the next periodic full sync. poke(true):
// a route of Petrel's protocol was deleted, or a route of another protocol
// appeared (it may have replaced one of Petrel's): what the caller
// remembers of the table is stale. poke(false): a route of another
// protocol went away, which may free a prefix Petrel was kept out of.
// Petrel's own installs do not poke, so a sync does not wake itself. A
// subscription error pokes as stale: events may have been lost.
//
// Watch returns once the subscription is live; stop ends it. ns is the
// namespace to watch, netns.None() for the caller's own. poke must not block.
func Watch(ns netns.NsHandle, proto int, poke func(stale bool)) (stop func(), err error) {
	done := make(chan struct{})
	updates, err := subscribe(ns, done)
	if err != nil {
		return nil, err
	}
	go func() {
		for {
			for u := range updates {
				ours := u.Route.Protocol == netlink.RouteProtocol(proto)
				switch {
				case (u.Type == unix.RTM_DELROUTE && ours) || (u.Type == unix.RTM_NEWROUTE && !ours):
					poke(true)
				case u.Type == unix.RTM_DELROUTE:
					poke(false)
				}
			}
			// The subscription ended: the socket overflowed while a large
			// update was installed, or failed. Changes may have been missed:
			// poke for a full look, and subscribe again.
			poke(true)
			for {
				select {
				case <-done:
					return
				case <-time.After(100 * time.Millisecond):
				}
				var serr error
				if updates, serr = subscribe(ns, done); serr == nil {
					break
				}
			}
		}
	}()
	return func() { close(done) }, nil
}

func subscribe(ns netns.NsHandle, done chan struct{}) (chan netlink.RouteUpdate, error) {
	updates := make(chan netlink.RouteUpdate, 1024)
	// Installing 100,000 routes sends as many notifications; a large buffer
	// keeps the subscription from overflowing during such a burst.
	opts := netlink.RouteSubscribeOptions{ReceiveBufferSize: 8 << 20, ReceiveBufferForceSize: true}
	if ns.IsOpen() {
		opts.Namespace = &ns
	}
	if err := netlink.RouteSubscribeWithOptions(updates, done, opts); err != nil {
		return nil, fmt.Errorf("subscribe to route changes: %w", err)
	}
	return updates, nil
}
