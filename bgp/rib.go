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
// nothing newer. The set is a small slice (one member per peer holding a
// best path: one or two), not a map, which keeps the mirror near 100 bytes
// a prefix; the prefixes an event touched are kept as the change set that
// Changes hands out, so that a flood of updates is programmed as it
// arrives, not by diffing the whole table each time.
type rib struct {
	mu    sync.Mutex
	set   map[netip.Prefix][]member
	dirty map[netip.Prefix]struct{}
	cs    []candidate // scratch for selectRoute
}

// member is one best path of a prefix: its peer (invalid when originated
// here) and its next hop.
type member struct {
	peer, nextHop netip.Addr
}

func newRib() rib {
	return rib{set: map[netip.Prefix][]member{}, dirty: map[netip.Prefix]struct{}{}}
}

func (r *rib) apply(paths []*apiutil.Path) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range paths {
		n, ok := p.Nlri.(*bgp.IPAddrPrefix)
		if !ok {
			continue
		}
		r.dirty[n.Prefix] = struct{}{}
		peer, nh := p.PeerAddress, nextHop(p)
		set := r.set[n.Prefix]
		i := slices.IndexFunc(set, func(m member) bool { return m.peer == peer })
		switch {
		case p.Withdrawal && i >= 0 && set[i].nextHop == nh:
			set = slices.Delete(set, i, i+1)
		case p.Withdrawal:
		case i >= 0:
			set[i].nextHop = nh
		default:
			set = append(set, member{peer: peer, nextHop: nh})
		}
		if len(set) == 0 {
			delete(r.set, n.Prefix)
		} else {
			r.set[n.Prefix] = set
		}
	}
}

// route is the kernel route of one prefix, if it gets one. Called with mu
// held.
func (r *rib) route(prefix netip.Prefix) (Route, bool) {
	r.cs = r.cs[:0]
	for _, m := range r.set[prefix] {
		r.cs = append(r.cs, candidate{best: true, local: !m.peer.IsValid(), nextHop: m.nextHop})
	}
	return selectRoute(prefix, r.cs)
}

// Routes returns the kernel routes for what the speaker has learned, both
// families, sorted by prefix, and starts a new change set: Changes reports
// only what changed after this call.
func (s *Speaker) Routes() ([]Route, error) {
	var out []Route
	s.EachRoute(func(r Route) { out = append(out, r) })
	slices.SortFunc(out, func(a, b Route) int {
		if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
			return c
		}
		return a.Prefix.Bits() - b.Prefix.Bits()
	})
	return out, nil
}

// RouteCount is how many prefixes have a best path: at most the number of
// routes EachRoute gives.
func (s *Speaker) RouteCount() int {
	s.rib.mu.Lock()
	defer s.rib.mu.Unlock()
	return len(s.rib.set)
}

// EachRoute is Routes without the slice: it calls f with each route, in no
// order, and starts a new change set. f runs with the mirror locked (the
// best-path events wait): it must only take the route. A full sync at
// 100,000 routes builds its desired table from this without another copy.
func (s *Speaker) EachRoute(f func(Route)) {
	s.rib.mu.Lock()
	defer s.rib.mu.Unlock()
	for prefix := range s.rib.set {
		if r, ok := s.rib.route(prefix); ok {
			f(r)
		}
	}
	clear(s.rib.dirty)
}

// Changes returns what changed since the last call of Changes or Routes:
// the prefixes whose kernel route is new or different, with that route,
// and those that no longer get one. A prefix may be reported although its
// route ended up as it was (it changed and changed back).
func (s *Speaker) Changes() (changed []Route, gone []netip.Prefix) {
	s.rib.mu.Lock()
	defer s.rib.mu.Unlock()
	changed = make([]Route, 0, len(s.rib.dirty)) // mostly changes, during a flood
	for prefix := range s.rib.dirty {
		if r, ok := s.rib.route(prefix); ok {
			changed = append(changed, r)
		} else {
			gone = append(gone, prefix)
		}
	}
	clear(s.rib.dirty)
	return changed, gone
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
