// Package route programs Petrel's kernel routes: the routes learned over BGP
// and the blackholes of the node's own pod CIDRs.
// Every route it writes carries Petrel's rtm_protocol, and it lists, replaces
// and deletes only routes with that protocol: routes of other daemons and of
// the administrator are never touched, and nothing is flushed at start-up.
//
// Sync is level-triggered: it takes the whole desired set, diffs it against
// what the kernel holds and applies the difference, replacing before
// deleting so that a prefix moving between next hops never has a gap.
package route

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Route is one desired kernel route: a prefix with one next hop, several
// (ECMP), or none and Blackhole set.
type Route struct {
	Prefix    netip.Prefix
	NextHops  []netip.Addr
	Blackhole bool
}

// String renders the route the way `ip route` prints it, for logs and tests.
func (r Route) String() string {
	if r.Blackhole {
		return "blackhole " + r.Prefix.String()
	}
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

// normal returns the route with its next hops sorted and deduplicated, so
// that two routes with the same next hops in another order compare equal.
func (r Route) normal() Route {
	if sorted(r.NextHops) {
		return r // the usual case: it costs no copy
	}
	nh := slices.Clone(r.NextHops)
	slices.SortFunc(nh, netip.Addr.Compare)
	r.NextHops = slices.Compact(nh)
	return r
}

// sorted says whether next hops are in strictly increasing order.
func sorted(nhs []netip.Addr) bool {
	for i := 1; i < len(nhs); i++ {
		if nhs[i-1].Compare(nhs[i]) >= 0 {
			return false
		}
	}
	return true
}

func (r Route) equal(o Route) bool {
	a, b := r.normal(), o.normal()
	return a.Prefix == b.Prefix && a.Blackhole == b.Blackhole && slices.Equal(a.NextHops, b.NextHops)
}

// validate rejects a route the kernel would refuse or misread.
func (r Route) validate() error {
	if !r.Prefix.IsValid() || r.Prefix.Masked() != r.Prefix {
		return fmt.Errorf("route %s: prefix not in canonical form", r.Prefix)
	}
	if r.Blackhole != (len(r.NextHops) == 0) {
		return fmt.Errorf("route %s: a blackhole has no next hops and only a blackhole has none", r.Prefix)
	}
	for _, nh := range r.NextHops {
		if nh.Is4() != r.Prefix.Addr().Is4() {
			return fmt.Errorf("route %s: next hop %s of the other family", r.Prefix, nh)
		}
	}
	return nil
}

// byPrefix orders routes by prefix address, then length.
func byPrefix(a, b Route) int {
	if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
		return c
	}
	return a.Prefix.Bits() - b.Prefix.Bits()
}

// Diff returns the routes to install or replace and the routes to delete to
// turn have into want. Both results are sorted by prefix.
func Diff(have, want []Route) (replace, remove []Route) {
	h := map[netip.Prefix]Route{}
	for _, r := range have {
		h[r.Prefix] = r
	}
	w := map[netip.Prefix]bool{}
	for _, r := range want {
		w[r.Prefix] = true
		if cur, ok := h[r.Prefix]; !ok || !cur.equal(r) {
			replace = append(replace, r.normal())
		}
	}
	for _, r := range have {
		if !w[r.Prefix] {
			remove = append(remove, r)
		}
	}
	slices.SortFunc(replace, byPrefix)
	slices.SortFunc(remove, byPrefix)
	return replace, remove
}
