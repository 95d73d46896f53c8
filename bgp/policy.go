package bgp

import (
	"context"
	"fmt"
	"net/netip"

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
func guardSets(cfg Config) []*api.DefinedSet {
	var out []*api.DefinedSet
	add := func(name string, ps []netip.Prefix) {
		for _, fam := range []struct {
			suffix string
			is4    bool
		}{{"-v4", true}, {"-v6", false}} {
			set := &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: name + fam.suffix}
			for _, p := range ps {
				if p.Addr().Is4() == fam.is4 {
					set.Prefixes = append(set.Prefixes, &api.Prefix{
						IpPrefix: p.Masked().String(), MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Addr().BitLen()),
					})
				}
			}
			if len(set.Prefixes) > 0 {
				out = append(out, set)
			}
		}
	}
	add("petrel-own", cfg.PodCIDRs)
	add("petrel-cluster", append(append([]netip.Prefix{}, cfg.ClusterCIDRs...), cfg.ImportExtras...))
	return out
}

func statement(name, set string, action api.RouteAction) *api.Statement {
	return &api.Statement{
		Name:       name,
		Conditions: &api.Conditions{PrefixSet: &api.MatchSet{Name: set, Type: api.MatchSet_TYPE_ANY}},
		Actions:    &api.Actions{RouteAction: action},
	}
}

func (s *Speaker) installGuard(ctx context.Context) error {
	sets := guardSets(s.cfg)
	have := map[string]bool{}
	for _, d := range sets {
		if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: d}); err != nil {
			return fmt.Errorf("prefix set %s: %w", d.Name, err)
		}
		have[d.Name] = true
	}
	// Paths originated here pass the global import policy too: accept them
	// before the statement that rejects the node's own CIDRs from peers.
	imp := []*api.Statement{{
		Name:       "accept-local",
		Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
		Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
	}}
	var exp []*api.Statement
	for _, fam := range []string{"-v4", "-v6"} {
		if have["petrel-own"+fam] {
			imp = append(imp, statement("reject-own"+fam, "petrel-own"+fam, api.RouteAction_ROUTE_ACTION_REJECT))
			exp = append(exp, statement("export-own"+fam, "petrel-own"+fam, api.RouteAction_ROUTE_ACTION_ACCEPT))
		}
		if have["petrel-cluster"+fam] {
			imp = append(imp, statement("accept-cluster"+fam, "petrel-cluster"+fam, api.RouteAction_ROUTE_ACTION_ACCEPT))
			if s.cfg.RouteReflector {
				exp = append(exp, statement("reflect-cluster"+fam, "petrel-cluster"+fam, api.RouteAction_ROUTE_ACTION_ACCEPT))
			}
		}
	}
	for _, a := range []struct {
		name  string
		dir   api.PolicyDirection
		stmts []*api.Statement
	}{
		{"petrel-import", api.PolicyDirection_POLICY_DIRECTION_IMPORT, imp},
		{"petrel-export", api.PolicyDirection_POLICY_DIRECTION_EXPORT, exp},
	} {
		pol := &api.Policy{Name: a.name, Statements: a.stmts}
		if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol, ReferExistingStatements: false}); err != nil {
			return fmt.Errorf("policy %s: %w", a.name, err)
		}
		err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name: globalRIB, Direction: a.dir, Policies: []*api.Policy{{Name: a.name}},
			DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
		}})
		if err != nil {
			return fmt.Errorf("assign policy %s: %w", a.name, err)
		}
	}
	return nil
}
