package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"google.golang.org/protobuf/proto"
)

// Set trusts what it configured. Reconcile, run at the agent's periodic
// resync, reads GoBGP's actual state and forgets whatever differs, so that
// the next Set repairs it: a neighbor deleted, added or changed through
// the API, an import or export policy replaced, an announcement withdrawn.
// Reading GoBGP's state takes its server loop, which is why it is not done
// at every sync.

// Reconcile compares GoBGP's peers, guard and this node's announcements
// with what Set configured, undoes changes made behind the speaker's back
// (a foreign neighbor is deleted, the guard reinstalled), and marks the
// rest for the next Set. It returns what it repaired or marked.
func (s *Speaker) Reconcile(ctx context.Context) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var fixed []string
	var errs []error
	f, err := s.reconcilePeers(ctx)
	fixed, errs = append(fixed, f...), append(errs, err)
	f, err = s.reconcileGuard(ctx)
	fixed, errs = append(fixed, f...), append(errs, err)
	f, err = s.reconcileAdverts()
	fixed, errs = append(fixed, f...), append(errs, err)
	if len(fixed) > 0 {
		s.log.Warn("the speaker was changed behind the agent's back; repairing", "changes", fixed)
	}
	return fixed, errors.Join(errs...)
}

// peerPrint is the configuration part of a GoBGP peer, as text: what Set
// configured, without the session's live state.
func peerPrint(p *api.Peer) string {
	c := &api.Peer{Conf: p.Conf, EbgpMultihop: p.EbgpMultihop, RouteReflector: p.RouteReflector, Bfd: p.Bfd}
	if p.Timers != nil {
		c.Timers = &api.Timers{Config: p.Timers.Config}
	}
	if p.GracefulRestart != nil {
		c.GracefulRestart = &api.GracefulRestart{Enabled: p.GracefulRestart.Enabled, RestartTime: p.GracefulRestart.RestartTime, HelperOnly: p.GracefulRestart.HelperOnly}
	}
	for _, a := range p.AfiSafis {
		c.AfiSafis = append(c.AfiSafis, &api.AfiSafi{Config: a.Config, PrefixLimits: a.PrefixLimits})
	}
	c = proto.Clone(c).(*api.Peer)
	if c.Conf != nil {
		c.Conf = &api.PeerConf{NeighborAddress: c.Conf.NeighborAddress, PeerAsn: c.Conf.PeerAsn, AuthPassword: c.Conf.AuthPassword}
	}
	if c.RouteReflector != nil {
		c.RouteReflector = &api.RouteReflector{RouteReflectorClient: c.RouteReflector.RouteReflectorClient, RouteReflectorClusterId: c.RouteReflector.RouteReflectorClusterId}
	}
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	return string(b)
}

// listPeers returns GoBGP's peers by address.
func (s *Speaker) listPeers(ctx context.Context, only ...netip.Addr) (map[netip.Addr]*api.Peer, error) {
	out := map[netip.Addr]*api.Peer{}
	req := &api.ListPeerRequest{}
	if len(only) == 1 {
		req.Address = only[0].String() // one peer rendered, not all
	}
	err := s.srv.ListPeer(ctx, req, func(p *api.Peer) {
		if a, err := netip.ParseAddr(p.GetConf().GetNeighborAddress()); err == nil {
			out[a] = p
		}
	})
	return out, err
}

func (s *Speaker) reconcilePeers(ctx context.Context) ([]string, error) {
	actual, err := s.listPeers(ctx)
	if err != nil {
		return nil, fmt.Errorf("list peers: %w", err)
	}
	var fixed []string
	var errs []error
	for addr := range actual {
		if _, ours := s.peers[addr]; !ours {
			err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()})
			errs = append(errs, err)
			fixed = append(fixed, "neighbor "+addr.String()+" added through the API: deleted")
		}
	}
	for addr := range s.peers {
		got, ok := actual[addr]
		switch {
		case !ok:
			delete(s.peers, addr) // the next Set adds it again
			fixed = append(fixed, "neighbor "+addr.String()+" deleted through the API: added again")
		case peerPrint(got) != s.prints[addr]:
			s.dropped[addr] = true // the next Set replaces it
			fixed = append(fixed, "neighbor "+addr.String()+" changed through the API: configured again")
		}
	}
	return fixed, errors.Join(errs...)
}

// guardPrint is GoBGP's policy state as text: the defined sets, policies
// and global assignments.
func (s *Speaker) guardPrint(ctx context.Context) (string, error) {
	var parts []string
	add := func(m proto.Message) {
		b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		parts = append(parts, string(b))
	}
	err := s.srv.ListDefinedSet(ctx, &api.ListDefinedSetRequest{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX}, func(d *api.DefinedSet) { add(d) })
	if err == nil {
		err = s.srv.ListDefinedSet(ctx, &api.ListDefinedSetRequest{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR}, func(d *api.DefinedSet) { add(d) })
	}
	if err == nil {
		err = s.srv.ListPolicy(ctx, &api.ListPolicyRequest{}, func(p *api.Policy) { add(p) })
	}
	for _, dir := range []api.PolicyDirection{api.PolicyDirection_POLICY_DIRECTION_IMPORT, api.PolicyDirection_POLICY_DIRECTION_EXPORT} {
		if err == nil {
			err = s.srv.ListPolicyAssignment(ctx, &api.ListPolicyAssignmentRequest{Name: globalRIB, Direction: dir}, func(a *api.PolicyAssignment) { add(a) })
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, "\n"), err
}

// reconcileGuard reinstalls the guard when GoBGP's policies are no longer
// the ones the speaker installed.
func (s *Speaker) reconcileGuard(ctx context.Context) ([]string, error) {
	now, err := s.guardPrint(ctx)
	if err != nil {
		return nil, fmt.Errorf("read the import guard: %w", err)
	}
	if now == s.guardState {
		return nil, nil
	}
	g := guard{peers: s.peers, scope: s.scope, drain: s.drain}
	sets, pols := guardPolicies(s.cfg, g)
	if err := s.srv.SetPolicies(ctx, &api.SetPoliciesRequest{DefinedSets: sets, Policies: pols}); err != nil {
		return nil, fmt.Errorf("reinstall the import guard: %w", err)
	}
	if err := s.assignGuard(ctx); err != nil {
		return nil, err
	}
	s.guard = g.key()
	s.guardState, err = s.guardPrint(ctx)
	return []string{"import or export policy changed through the API: reinstalled"}, err
}

// reconcileAdverts forgets announcements GoBGP no longer holds, so that
// the next Set originates them again.
func (s *Speaker) reconcileAdverts() ([]string, error) {
	var fixed []string
	for p := range s.adverts {
		fam := bgp.RF_IPv4_UC
		if p.Addr().Is6() {
			fam = bgp.RF_IPv6_UC
		}
		found := false
		err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam,
			Prefixes: []*apiutil.LookupPrefix{{Prefix: p.String(), LookupOption: apiutil.LOOKUP_EXACT}}},
			func(_ bgp.NLRI, paths []*apiutil.Path) {
				for _, path := range paths {
					found = found || (!path.PeerAddress.IsValid() && !path.Withdrawal)
				}
			})
		if err != nil {
			return fixed, fmt.Errorf("list the announcement of %s: %w", p, err)
		}
		if !found {
			delete(s.adverts, p)
			fixed = append(fixed, "announcement of "+p.String()+" withdrawn through the API: announced again")
		}
	}
	return fixed, nil
}
