package bgp

import (
	"fmt"
	"net/netip"
	"slices"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/petrelnet/petrel/bgp/fib"
)

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
func selectRoute(prefix netip.Prefix, paths []candidate) (fib.Route, bool) {
	var nhs []netip.Addr
	for _, p := range paths {
		if !p.best {
			continue
		}
		if p.local {
			return fib.Route{}, false
		}
		if p.nextHop.IsValid() && !p.nextHop.IsUnspecified() && p.nextHop.Is4() == prefix.Addr().Is4() {
			nhs = append(nhs, p.nextHop)
		}
	}
	if len(nhs) == 0 {
		return fib.Route{}, false
	}
	slices.SortFunc(nhs, netip.Addr.Compare)
	return fib.Route{Prefix: prefix, NextHops: slices.Compact(nhs)}, true
}

// Routes returns the kernel routes for what the speaker has learned, both
// families, sorted by prefix.
func (s *Speaker) Routes() ([]fib.Route, error) {
	var out []fib.Route
	for _, fam := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam},
			func(nlri bgp.NLRI, paths []*apiutil.Path) {
				n, ok := nlri.(*bgp.IPAddrPrefix)
				if !ok {
					return
				}
				cs := make([]candidate, 0, len(paths))
				for _, p := range paths {
					cs = append(cs, candidate{best: p.Best, local: !p.PeerAddress.IsValid(), nextHop: nextHop(p)})
				}
				if r, ok := selectRoute(n.Prefix, cs); ok {
					out = append(out, r)
				}
			})
		if err != nil {
			return nil, fmt.Errorf("list %s paths: %w", fam, err)
		}
	}
	slices.SortFunc(out, func(a, b fib.Route) int { return a.Prefix.Addr().Compare(b.Prefix.Addr()) })
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
