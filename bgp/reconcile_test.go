package bgp

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
)

// TestReconcileRepairsChangesBehindTheAgentsBack makes the changes an API
// user could (a neighbor deleted, a foreign neighbor added, the import
// policy replaced by accept-all, the node's announcement withdrawn) and
// checks that Reconcile plus the next Set put everything back, and that an
// untouched speaker reconciles to nothing.
func TestReconcileRepairsChangesBehindTheAgentsBack(t *testing.T) {
	ctx := context.Background()
	a := startNode(t, "127.0.0.41", 65001, []string{"10.244.1.0/24"})
	b := startNode(t, "127.0.0.42", 65002, []string{"10.244.2.0/24"})
	a.set(b)
	b.set(a)
	a.routesBecome("10.244.2.0/24 via 127.0.0.42")
	b.routesBecome("10.244.1.0/24 via 127.0.0.41")
	reconciled := func(want ...string) {
		t.Helper()
		fixed, err := a.sp.Reconcile(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(fixed, "; "); len(want) == 0 && got != "" || len(want) > 0 && !containsAll(got, want) {
			t.Fatalf("reconcile: %q, want %q", got, want)
		}
		a.set(b)
	}
	reconciled() // nothing changed: nothing to repair

	if err := a.sp.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: "127.0.0.42"}); err != nil {
		t.Fatal(err)
	}
	reconciled("neighbor 127.0.0.42 deleted through the API")
	a.routesBecome("10.244.2.0/24 via 127.0.0.42")

	foreign := &api.Peer{Conf: &api.PeerConf{NeighborAddress: "127.0.0.49", PeerAsn: 65009}}
	if err := a.sp.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: foreign}); err != nil {
		t.Fatal(err)
	}
	reconciled("neighbor 127.0.0.49 added through the API: deleted")
	if peers, _ := a.sp.listPeers(ctx); len(peers) != 1 {
		t.Fatalf("GoBGP has %d peers after the repair, want 1", len(peers))
	}

	err := a.sp.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name: globalRIB, Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT, DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT}})
	if err != nil {
		t.Fatal(err)
	}
	reconciled("import or export policy changed through the API: reinstalled")

	if err := a.sp.srv.DeletePath(apiutil.DeletePathRequest{Paths: []*apiutil.Path{originated(netip.MustParsePrefix("10.244.1.0/24"), nil)}}); err != nil {
		t.Fatal(err)
	}
	b.routesBecome("")
	reconciled("announcement of 10.244.1.0/24 withdrawn through the API")
	b.routesBecome("10.244.1.0/24 via 127.0.0.41")
	reconciled() // repaired: nothing left to do
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// A peer with every option set reconciles to nothing once established:
// nothing GoBGP fills in or negotiates may look like a change, or every
// resync would reset the session.
func TestReconcileLeavesAFullyConfiguredPeerAlone(t *testing.T) {
	ctx := context.Background()
	a := startNode(t, "127.0.0.71", 65001, []string{"10.244.1.0/24"})
	b := startNode(t, "127.0.0.72", 65002, []string{"10.244.2.0/24"})
	full := func(n, o *node) Peer {
		p := n.peerOf(o)
		p.Password = "s3cret"
		p.GracefulRestart = GracefulRestart{Enabled: true, RestartTime: 120 * time.Second}
		p.BFD = BFD{Enabled: true, MinTx: 300 * time.Millisecond, MinRx: 300 * time.Millisecond, Multiplier: 3}
		p.Multihop = 2
		p.MaxPrefixes = 1000
		return p
	}
	if _, err := a.sp.Set(ctx, []Peer{full(a, b)}, Adverts{Prefixes: a.pods}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.sp.Set(ctx, []Peer{full(b, a)}, Adverts{Prefixes: b.pods}); err != nil {
		t.Fatal(err)
	}
	a.routesBecome("10.244.2.0/24 via 127.0.0.72")
	for range 2 {
		fixed, err := a.sp.Reconcile(ctx)
		if err != nil || len(fixed) != 0 {
			t.Fatalf("reconcile of an untouched, established peer: %q %v", fixed, err)
		}
		if c, _ := a.sp.Set(ctx, []Peer{full(a, b)}, Adverts{Prefixes: a.pods}); c.PeersAdded != 0 {
			t.Fatalf("the peer was recreated: %+v", c)
		}
		time.Sleep(time.Second)
	}
}
