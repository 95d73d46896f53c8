package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// In a node mesh each node may announce only its own pod CIDRs: c also
// announces b's CIDR (misconfigured or hostile), and a, which guards each
// session with the node's CIDR, takes b's CIDR from b alone. Lifting the
// guard (a changed Accept, applied live) lets c's path in: the guard, not
// chance, kept it out.
func TestMeshGuardAcceptsANodesCIDROnlyFromThatNode(t *testing.T) {
	a := startNode(t, "127.0.0.11", 65001, []string{"10.244.1.0/24"})
	b := startNode(t, "127.0.0.12", 65001, []string{"10.244.2.0/24"})
	c := startNode(t, "127.0.0.13", 65001, []string{"10.244.3.0/24", "10.244.2.0/24"})
	guarded := func(guard bool) {
		t.Helper()
		pb, pc := a.peerOf(b), a.peerOf(c)
		if guard {
			pb.Accept, pc.Accept = b.pods[:1], c.pods[:1]
		}
		if _, err := a.sp.Set(context.Background(), []Peer{pb, pc}, Adverts{Prefixes: a.pods}); err != nil {
			t.Fatal(err)
		}
	}
	guarded(true)
	b.set(a)
	c.set(a)
	a.routesBecome("10.244.2.0/24 via 127.0.0.12; 10.244.3.0/24 via 127.0.0.13")
	if got := learned(t, a.sp); got != "10.244.2.0/24 from 127.0.0.12; 10.244.3.0/24 from 127.0.0.13" {
		t.Fatalf("a's RIB holds %q: c's path for b's CIDR must be rejected", got)
	}
	guarded(false)
	a.routesBecome("10.244.2.0/24 nexthop via 127.0.0.12 nexthop via 127.0.0.13; 10.244.3.0/24 via 127.0.0.13")
	guarded(true)
	a.routesBecome("10.244.2.0/24 via 127.0.0.12; 10.244.3.0/24 via 127.0.0.13")
}

// Communities set on a running speaker go out on its announcements.
func TestCommunitiesOnAnnouncements(t *testing.T) {
	a := startNode(t, "127.0.0.14", 65001, []string{"10.244.1.0/24"})
	b := startNode(t, "127.0.0.15", 65002, []string{"10.244.2.0/24"})
	a.set(b)
	b.set(a)
	b.routesBecome("10.244.1.0/24 via 127.0.0.14")
	c1, _ := ParseCommunity("65000:100")
	c2, _ := ParseCommunity("64512:7")
	a.communities = []uint32{c1, c2}
	a.set(b)
	wait.Until(t, 20*time.Second, "b sees a's communities", func() bool { return communitiesFrom(t, b.sp) == "65000:100 64512:7" })
	a.communities = nil
	a.set(b)
	wait.Until(t, 20*time.Second, "communities removed", func() bool { return communitiesFrom(t, b.sp) == "" })
	if _, err := ParseCommunity("65536:1"); err == nil {
		t.Fatal("65536:1 accepted")
	}
}

func communitiesFrom(t *testing.T, s *Speaker) string {
	var out []string
	err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: bgp.RF_IPv4_UC}, func(_ bgp.NLRI, ps []*apiutil.Path) {
		for _, p := range ps {
			if !p.PeerAddress.IsValid() {
				continue
			}
			for _, a := range p.Attrs {
				if c, ok := a.(*bgp.PathAttributeCommunities); ok {
					for _, v := range c.Value {
						out = append(out, fmt.Sprintf("%d:%d", v>>16, v&0xffff))
					}
				}
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, " ")
}

// A top-of-rack router may pass on each node's pod CIDR exactly as the API
// gives it, and the configured extras, but never a more-specific carved
// out of a pod CIDR, nor a pod CIDR the API does not know, nor anything
// inside this node's own pod CIDR.
func TestToRAcceptsExactNodeCIDRs(t *testing.T) {
	a := startNode(t, "127.0.0.61", 65001, []string{"10.244.1.0/24"}, "10.244.0.0/16", "192.0.2.0/24")
	tor := startNode(t, "127.0.0.62", 65000, []string{"10.244.2.0/24", "10.244.2.5/32", "10.244.3.0/24", "10.244.1.7/32", "192.0.2.0/25"},
		"10.244.0.0/16", "192.0.2.0/24")
	tor.set(a)
	p := a.peerOf(tor)
	p.AcceptExact = []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}
	p.Accept = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	if _, err := a.sp.Set(context.Background(), []Peer{p}, Adverts{Prefixes: a.pods}); err != nil {
		t.Fatal(err)
	}
	a.routesBecome("10.244.2.0/24 via 127.0.0.62; 192.0.2.0/25 via 127.0.0.62")
	// A node joins: its CIDR is accepted live, the session is not reset.
	p.AcceptExact = append(p.AcceptExact, netip.MustParsePrefix("10.244.3.0/24"))
	c, err := a.sp.Set(context.Background(), []Peer{p}, Adverts{Prefixes: a.pods})
	if err != nil || c.PeersAdded+c.PeersRemoved != 0 {
		t.Fatalf("a widened guard reset the session: %+v %v", c, err)
	}
	a.routesBecome("10.244.2.0/24 via 127.0.0.62; 10.244.3.0/24 via 127.0.0.62; 192.0.2.0/25 via 127.0.0.62")
}

// A router outside the cluster of a one-node cluster (no other node's CIDR
// to accept yet) may send nothing at all: Guarded applies the empty list.
func TestGuardedPeerWithNothingToAccept(t *testing.T) {
	a := startNode(t, "127.0.0.63", 65001, []string{"10.244.1.0/24"})
	tor := startNode(t, "127.0.0.64", 65000, []string{"10.244.2.0/24", "10.244.9.0/24"})
	tor.set(a)
	p := a.peerOf(tor)
	p.Guarded = true
	if _, err := a.sp.Set(context.Background(), []Peer{p}, Adverts{Prefixes: a.pods}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 20*time.Second, "the router's paths received", func() bool { return len(attrsFrom(t, a.sp, tor.addr)) > 0 })
	a.routesBecome("")
	// A second node joins: its CIDR, and only it, is accepted.
	p.AcceptExact = []netip.Prefix{netip.MustParsePrefix("10.244.2.0/24")}
	if _, err := a.sp.Set(context.Background(), []Peer{p}, Adverts{Prefixes: a.pods}); err != nil {
		t.Fatal(err)
	}
	a.routesBecome("10.244.2.0/24 via 127.0.0.64")
}
