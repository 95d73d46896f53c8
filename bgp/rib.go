package bgp

import (
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// Route is a learned route for the kernel: a prefix and its next hops (one,
// or several for ECMP). The agent hands it to the route programmer.
type Route struct {
	Prefix   netip.Prefix
	NextHops []netip.Addr
}

// String renders the route the way `ip route` prints it.
func (r Route) String() string {
	if len(r.NextHops) == 1 {
		return r.Prefix.String() + " via " + r.NextHops[0].String()
	}
	var b strings.Builder
	b.WriteString(r.Prefix.String())
	for _, nh := range r.NextHops {
		b.WriteString(" nexthop via " + nh.String())
	}
	return b.String()
}

// candidate is what route selection needs of a path.
type candidate struct {
	best    bool
	local   bool // originated here
	nextHop netip.Addr
}

// selectRoute turns the paths of one prefix into a kernel route: every
// best path learned from a peer is a next hop (GoBGP marks all equal-cost
// paths best when multipath is on), so several make an ECMP route. A prefix
// whose best path is our own, or that has no usable next hop, gets none.
func selectRoute(prefix netip.Prefix, paths []candidate) (Route, bool) {
	var nhs []netip.Addr
	for _, p := range paths {
		if !p.best {
			continue
		}
		if p.local {
			return Route{}, false
		}
		if p.nextHop.IsValid() && !p.nextHop.IsUnspecified() && p.nextHop.Is4() == prefix.Addr().Is4() {
			nhs = append(nhs, p.nextHop)
		}
	}
	if len(nhs) == 0 {
		return Route{}, false
	}
	slices.SortFunc(nhs, netip.Addr.Compare)
	return Route{Prefix: prefix, NextHops: slices.Compact(nhs)}, true
}

// rib mirrors GoBGP's multipath best-path sets from the best-path events:
// with multipath on, each event carries the paths that joined a prefix's
// set and, marked withdrawn, those that left it. Keeping this mirror lets
// Routes answer from memory; listing GoBGP's table instead would stall its
// update processing (both run on its one server loop) on every sync.
//
// A peer has at most one path per prefix (no add-path), so a prefix's set
// is keyed by peer: a path with a new next hop from the same peer replaces
// the old one, whose withdrawal, if the event carries it at all, removes
// nothing newer.
type rib struct {
	mu  sync.Mutex
	set map[netip.Prefix]map[netip.Addr]candidate // by peer; zero: originated here
	// routes are the kernel routes of the prefixes, kept up to date by
	// apply for the prefixes an event touches, so that Routes, called at
	// every sync during a flood of updates, only collects them.
	routes map[netip.Prefix]Route
}

func newRib() rib {
	return rib{set: map[netip.Prefix]map[netip.Addr]candidate{}, routes: map[netip.Prefix]Route{}}
}

func (r *rib) apply(paths []*apiutil.Path) {
	r.mu.Lock()
	defer r.mu.Unlock()
	touched := make(map[netip.Prefix]struct{}, len(paths))
	for _, p := range paths {
		n, ok := p.Nlri.(*bgp.IPAddrPrefix)
		if !ok {
			continue
		}
		touched[n.Prefix] = struct{}{}
		peer, nh := p.PeerAddress, nextHop(p)
		set := r.set[n.Prefix]
		if p.Withdrawal {
			if c, ok := set[peer]; ok && c.nextHop == nh {
				delete(set, peer)
			}
			if len(set) == 0 {
				delete(r.set, n.Prefix)
			}
			continue
		}
		if set == nil {
			set = map[netip.Addr]candidate{}
			r.set[n.Prefix] = set
		}
		set[peer] = candidate{best: true, local: !peer.IsValid(), nextHop: nh}
	}
	var cs []candidate
	for prefix := range touched {
		cs = cs[:0]
		for _, c := range r.set[prefix] {
			cs = append(cs, c)
		}
		if route, ok := selectRoute(prefix, cs); ok {
			r.routes[prefix] = route
		} else {
			delete(r.routes, prefix)
		}
	}
}

// Routes returns the kernel routes for what the speaker has learned, both
// families, sorted by prefix.
func (s *Speaker) Routes() ([]Route, error) {
	s.rib.mu.Lock()
	out := make([]Route, 0, len(s.rib.routes))
	for _, r := range s.rib.routes {
		out = append(out, r)
	}
	s.rib.mu.Unlock()
	slices.SortFunc(out, func(a, b Route) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out, nil
}

// nextHop reads the path's next hop: NEXT_HOP for IPv4, the global address
// of MP_REACH_NLRI for IPv6.
func nextHop(p *apiutil.Path) netip.Addr {
	for _, a := range p.Attrs {
		switch a := a.(type) {
		case *bgp.PathAttributeNextHop:
			return a.Value
		case *bgp.PathAttributeMpReachNLRI:
			return a.Nexthop
		}
	}
	return netip.Addr{}
}
