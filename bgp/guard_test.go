package bgp

import (
	"context"
	"fmt"
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
