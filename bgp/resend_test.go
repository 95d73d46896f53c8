package bgp

import (
	"context"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// TestResentPathsKeepECMP: peers re-sending paths a node already has (as
// the re-send to new sessions does, and a router's `clear bgp soft out`)
// change nothing: both next hops of an ECMP route stay, in the mirror and
// in GoBGP's table.
func TestResentPathsKeepECMP(t *testing.T) {
	a, b, c := anycast(t)
	const want = "10.244.9.0/24 nexthop via 127.0.0.9 nexthop via 127.0.0.10"
	for i := range 10 {
		before := a.updatesFrom(t, b, c)
		for _, n := range []*node{b, c} {
			if err := n.sp.srv.ResetPeer(context.Background(), &api.ResetPeerRequest{Address: a.addr.String(), Soft: true,
				Direction: api.ResetPeerRequest_DIRECTION_OUT}); err != nil {
				t.Fatal(err)
			}
		}
		wait.Until(t, 10*time.Second, "a to receive both re-sent UPDATEs", func() bool {
			return a.updatesFrom(t, b, c) >= before+2
		})
		if got, _ := a.sp.Routes(); render(got) != want {
			t.Fatalf("after re-send %d a's routes are %q, want %q", i+1, render(got), want)
		}
	}
	if got := listedRoutes(t, a.sp); got != want {
		t.Fatalf("GoBGP's table says %q", got)
	}
}

// updatesFrom is how many UPDATEs n has received from the peers, together.
func (n *node) updatesFrom(t *testing.T, peers ...*node) uint64 {
	got, err := n.sp.listPeers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var total uint64
	for _, p := range peers {
		total += got[p.addr].GetState().GetMessages().GetReceived().GetUpdate()
	}
	return total
}
