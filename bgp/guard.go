package bgp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	api "github.com/osrg/gobgp/v4/api"
)

// The import guard: a path is accepted only for a prefix inside the cluster
// CIDRs (or the configured extras) and never for one of this node's own
// pod CIDRs, whoever announces it. Everything else is rejected. Export
// sends only this node's pod CIDRs: a node is never a transit, except a
// route reflector, which also sends the cluster prefixes it accepted.

const globalRIB = "global"

// guardSets are the prefix sets of the guard, one per family (a GoBGP
// prefix set holds one family).
func guardSets(cfg Config, scope []netip.Prefix) []*api.DefinedSet {
	var out []*api.DefinedSet
	add := func(name string, ranges func(is4 bool) []prefixRange) {
		for _, fam := range []struct {
			suffix string
			is4    bool
		}{{"-v4", true}, {"-v6", false}} {
			set := &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: name + fam.suffix}
			set.Prefixes = apiPrefixes(ranges(fam.is4))
			if len(set.Prefixes) > 0 {
				out = append(out, set)
			}
		}
	}
	add("petrel-own", func(is4 bool) []prefixRange { return subnets(cfg.PodCIDRs, is4) })
	add("petrel-cluster", func(is4 bool) []prefixRange {
		return subnets(append(slices.Clone(cfg.ClusterCIDRs), cfg.ImportExtras...), is4)
	})
	add("petrel-services", func(is4 bool) []prefixRange { return scopeEntries(scope, is4) })
	return out
}

// subnets are the prefixes of one family with all their subnets.
func subnets(ps []netip.Prefix, is4 bool) []prefixRange {
	var out []prefixRange
	for _, p := range ps {
		if p.Addr().Is4() == is4 {
			out = append(out, prefixRange{p.Masked(), p.Bits(), p.Addr().BitLen()})
		}
	}
	return out
}

func apiPrefixes(rs []prefixRange) []*api.Prefix {
	var out []*api.Prefix
	for _, r := range rs {
		out = append(out, &api.Prefix{IpPrefix: r.prefix.String(), MaskLengthMin: uint32(r.min), MaskLengthMax: uint32(r.max)})
	}
	return out
}

func statement(name, set string, action api.RouteAction) *api.Statement {
	return &api.Statement{
		Name:       name,
		Conditions: &api.Conditions{PrefixSet: &api.MatchSet{Name: set, Type: api.MatchSet_TYPE_ANY}},
		Actions:    &api.Actions{RouteAction: action},
	}
}

// guard is what the import and export policies are made of besides the
// speaker's fixed settings: the peers, the Service scope, the drain.
type guard struct {
	peers map[netip.Addr]Peer
	scope []netip.Prefix
	drain bool
}

// key identifies the guard: it changes only when a peer's accepted
// prefixes, the scope, or the drain do (or a peer's type, for the drain).
func (g guard) key() string {
	var b strings.Builder
	for _, a := range slices.SortedFunc(maps.Keys(g.peers), netip.Addr.Compare) {
		if p := g.peers[a]; p.guarded() || p.AcceptServices || p.Withhold != (Withhold{}) || g.drain {
			fmt.Fprintf(&b, "%s=%v/%v/%v/%v/%v/%d;", a, p.Accept, p.AcceptExact, p.Guarded, p.AcceptServices, p.Withhold, p.ASN)
		}
	}
	fmt.Fprintf(&b, "scope=%v;drain=%v", g.scope, g.drain)
	return b.String()
}

// guardPolicies renders the whole guard: its defined sets and the import
// and export policies. peers with Accept set get statements of their own,
// ahead of the cluster-wide accept.
func guardPolicies(cfg Config, g guard) ([]*api.DefinedSet, []*api.Policy) {
	peers := g.peers
	sets := guardSets(cfg, g.scope)
	have := map[string]bool{}
	for _, d := range sets {
		have[d.Name] = true
	}
	// Paths originated here pass the global import policy too: accept them
	// before the statement that rejects the node's own CIDRs from peers.
	imp := []*api.Statement{{
		Name:       "accept-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	}}
	for _, fam := range []string{"-v4", "-v6"} {
		if have["petrel-own"+fam] {
			imp = append(imp, statement("reject-own"+fam, "petrel-own"+fam, api.RouteAction_ROUTE_ACTION_REJECT))
		}
	}
	// Export: what this node originates (Set checked it: the pod CIDRs and
	// Service addresses in scope), marked down first when draining.
	withSets, exp := withholdStatements(g.peers, have)
	drainSets, drainStmts := drainStatements(cfg, g)
	sets = append(append(sets, withSets...), drainSets...)
	exp = append(exp, drainStmts...)
	exp = append(exp, &api.Statement{
		Name:       "export-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	})
	peerSets, peerStmts := peerGuards(peers, g.scope)
	sets = append(sets, peerSets...)
	imp = append(imp, peerStmts...)
	for _, kind := range []string{"cluster", "services"} {
		for _, fam := range []string{"-v4", "-v6"} {
			set := "petrel-" + kind + fam
			if !have[set] {
				continue
			}
			imp = append(imp, statement("accept-"+kind+fam, set, api.RouteAction_ROUTE_ACTION_ACCEPT))
			if cfg.RouteReflector {
				exp = append(exp, statement("reflect-"+kind+fam, set, api.RouteAction_ROUTE_ACTION_ACCEPT))
			}
		}
	}
	return sets, []*api.Policy{{Name: "petrel-import", Statements: imp}, {Name: "petrel-export", Statements: exp}}
}

// withholdStatements reject, toward each peer with Withhold, the kinds
// it does not get: ahead of every export statement that accepts.
func withholdStatements(peers map[netip.Addr]Peer, have map[string]bool) ([]*api.DefinedSet, []*api.Statement) {
	var sets []*api.DefinedSet
	var stmts []*api.Statement
	for _, a := range slices.SortedFunc(maps.Keys(peers), netip.Addr.Compare) {
		w := peers[a].Withhold
		if w == (Withhold{}) {
			continue
		}
		nb := "out-" + a.String()
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: nb, List: []string{a.String()}})
		// The cluster set holds this node's pod CIDRs and every other
		// node's (reflected); the services set every Service address.
		for kind, off := range map[string]bool{"cluster": w.PodCIDRs, "services": w.Services} {
			for _, fam := range []string{"-v4", "-v6"} {
				set := "petrel-" + kind + fam
				if !off || !have[set] {
					continue
				}
				stmts = append(stmts, &api.Statement{Name: "withhold-" + kind + "-" + a.String() + fam,
					Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Name: nb, Type: api.MatchSet_TYPE_ANY},
						PrefixSet: &api.MatchSet{Name: set, Type: api.MatchSet_TYPE_ANY}},
					Actions: &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT}})
			}
		}
	}
	slices.SortFunc(stmts, func(x, y *api.Statement) int { return strings.Compare(x.Name, y.Name) })
	return sets, stmts
}

// drainStatements prepend this node's AS three more times to what it
// originates for eBGP peers while it drains (iBGP peers see the paths'
// local-pref 0 instead; GoBGP strips local-pref toward eBGP peers).
func drainStatements(cfg Config, g guard) ([]*api.DefinedSet, []*api.Statement) {
	if !g.drain {
		return nil, nil
	}
	ebgp := &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: "petrel-ebgp"}
	for _, a := range slices.SortedFunc(maps.Keys(g.peers), netip.Addr.Compare) {
		if g.peers[a].ASN != cfg.ASN {
			ebgp.List = append(ebgp.List, a.String())
		}
	}
	if len(ebgp.List) == 0 {
		return nil, nil // an empty neighbor set would match every peer
	}
	return []*api.DefinedSet{ebgp}, []*api.Statement{{
		Name: "drain-ebgp",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL,
			NeighborSet: &api.MatchSet{Name: ebgp.Name, Type: api.MatchSet_TYPE_ANY}},
		Actions: &api.Actions{AsPrepend: &api.AsPrependAction{Asn: cfg.ASN, Repeat: drainPrepend}},
	}}
}

// guarded: the peer's paths are checked against its own accept list.
func (p Peer) guarded() bool { return p.Guarded || len(p.Accept)+len(p.AcceptExact) > 0 }

// peerGuards rejects, from each peer with Accept or AcceptExact, every path
// outside them: per family, since a prefix set holds one family (and an
// inverted set of one family never matches a path of the other).
func peerGuards(peers map[netip.Addr]Peer, scope []netip.Prefix) ([]*api.DefinedSet, []*api.Statement) {
	addrs := slices.SortedFunc(maps.Keys(peers), netip.Addr.Compare)
	var sets []*api.DefinedSet
	var stmts []*api.Statement
	for _, a := range addrs {
		p := peers[a]
		if !p.guarded() {
			continue
		}
		nb := "peer-" + a.String()
		sets = append(sets, &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: nb, List: []string{a.String()}})
		for _, fam := range []struct {
			suffix string
			afi    api.Family_Afi
			is4    bool
		}{{"-v4", api.Family_AFI_IP, true}, {"-v6", api.Family_AFI_IP6, false}} {
			cond := &api.Conditions{NeighborSet: &api.MatchSet{Name: nb, Type: api.MatchSet_TYPE_ANY}}
			set := &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: "accept-" + a.String() + fam.suffix}
			add := func(pr netip.Prefix, maxLen int) {
				if pr.Addr().Is4() == fam.is4 {
					set.Prefixes = append(set.Prefixes, &api.Prefix{
						IpPrefix: pr.Masked().String(), MaskLengthMin: uint32(pr.Bits()), MaskLengthMax: uint32(maxLen),
					})
				}
			}
			for _, pr := range p.Accept {
				add(pr, pr.Addr().BitLen())
			}
			for _, pr := range p.AcceptExact {
				add(pr, pr.Bits())
			}
			if p.AcceptServices {
				set.Prefixes = append(set.Prefixes, apiPrefixes(scopeEntries(scope, fam.is4))...)
			}
			if len(set.Prefixes) > 0 {
				sets = append(sets, set)
				cond.PrefixSet = &api.MatchSet{Name: set.Name, Type: api.MatchSet_TYPE_INVERT}
			} else {
				cond.AfiSafiIn = []*api.Family{{Afi: fam.afi, Safi: api.Family_SAFI_UNICAST}}
			}
			stmts = append(stmts, &api.Statement{Name: "guard-" + a.String() + fam.suffix, Conditions: cond,
				Actions: &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT}})
		}
	}
	return sets, stmts
}

func (s *Speaker) installGuard(ctx context.Context) error {
	sets, pols := guardPolicies(s.cfg, guard{})
	for _, d := range sets {
		if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: d}); err != nil {
			return fmt.Errorf("prefix set %s: %w", d.Name, err)
		}
	}
	for _, pol := range pols {
		if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol, ReferExistingStatements: false}); err != nil {
			return fmt.Errorf("policy %s: %w", pol.Name, err)
		}
	}
	if err := s.assignGuard(ctx); err != nil {
		return err
	}
	var err error
	s.guardState, err = s.guardPrint(ctx)
	return err
}

// assignGuard makes petrel-import and petrel-export the global policies,
// rejecting whatever they do not accept.
func (s *Speaker) assignGuard(ctx context.Context) error {
	for dir, name := range map[api.PolicyDirection]string{
		api.PolicyDirection_POLICY_DIRECTION_IMPORT: "petrel-import", api.PolicyDirection_POLICY_DIRECTION_EXPORT: "petrel-export"} {
		err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: globalRIB, Direction: dir, Policies: []*api.Policy{{Name: name}},
			DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
		}})
		if err != nil {
			return fmt.Errorf("assign policy %s: %w", name, err)
		}
	}
	return nil
}

// updateGuard replaces the guard's definitions when a peer's Accept, the
// Service scope or the drain changed. It runs before such a peer is
// (re)created, so its first UPDATE already meets the new guard. A new scope
// is applied at once to what every peer sent before (GoBGP keeps rejected
// paths too).
func (s *Speaker) updateGuard(ctx context.Context, peers map[netip.Addr]Peer, scope []netip.Prefix, drain bool) error {
	g := guard{peers: peers, scope: slices.Clone(scope), drain: drain}
	key := g.key()
	if key == s.guard {
		return nil
	}
	sets, pols := guardPolicies(s.cfg, g)
	if err := s.srv.SetPolicies(ctx, &api.SetPoliciesRequest{DefinedSets: sets, Policies: pols}); err != nil {
		return fmt.Errorf("import guard: %w", err)
	}
	scopeChanged := !slices.Equal(s.scope, g.scope)
	s.guard, s.scope, s.drain = key, g.scope, drain
	var err error
	s.guardState, err = s.guardPrint(ctx)
	if scopeChanged {
		for addr := range s.peers {
			if s.states[addr] == "established" {
				err = errors.Join(err, s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.String(), Soft: true,
					Direction: api.ResetPeerRequest_DIRECTION_IN}))
			}
		}
	}
	return err
}
