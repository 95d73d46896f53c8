package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"

	"github.com/petrelnet/petrel/internal/testkit/wait"
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// Service addresses go out beside the pod CIDRs, but only inside the
// Service scope: the announcing node refuses the rest, and the receiving
// node accepts, from a mesh peer, only what its own scope allows and only
// when the peer may announce Services at all.
func TestServiceAddressesOnlyInScope(t *testing.T) {
	a := startNode(t, "127.0.0.81", 65001, []string{"10.244.1.0/24"})
	b := startNode(t, "127.0.0.82", 65001, []string{"10.244.2.0/24"})
	ctx := context.Background()
	bAdverts := Adverts{Prefixes: b.pods,
		Services:     prefixes("10.250.0.5/32", "10.250.0.0/24", "10.250.1.1/32", "10.251.0.1/32", "10.250.0.0/25"),
		ServiceScope: prefixes("10.250.0.0/24", "10.250.1.0/24"), Communities: []uint32{65000<<16 | 7}}
	_, err := b.sp.Set(ctx, []Peer{b.peerOf(a)}, bAdverts)
	if err == nil || !strings.Contains(err.Error(), "10.251.0.1/32") || !strings.Contains(err.Error(), "10.250.0.0/25") || strings.Contains(err.Error(), "10.250.0.5") {
		t.Fatalf("Set with addresses outside the scope: %v, want both named, and only them", err)
	}
	// The same again re-originates nothing (no UPDATEs at every sync).
	if c, _ := b.sp.Set(ctx, []Peer{b.peerOf(a)}, bAdverts); c.PathsAdded+c.PathsRemoved != 0 {
		t.Fatalf("the same Set again changed paths: %+v", c)
	}
	setA := func(services bool, scope ...string) {
		t.Helper()
		p := a.peerOf(b)
		p.Accept, p.AcceptServices = b.pods, services
		if _, err := a.sp.Set(ctx, []Peer{p}, Adverts{Prefixes: a.pods, ServiceScope: prefixes(scope...)}); err != nil {
			t.Fatal(err)
		}
	}
	setA(true, "10.250.0.0/24")
	a.routesBecome("10.244.2.0/24 via 127.0.0.82; 10.250.0.0/24 via 127.0.0.82; 10.250.0.5/32 via 127.0.0.82")
	// A peer that may not announce Services (a router, say) gets none in.
	setA(false, "10.250.0.0/24")
	a.routesBecome("10.244.2.0/24 via 127.0.0.82")
	// A wider scope applies at once to what the peer already sent.
	setA(true, "10.250.0.0/24", "10.250.1.0/24")
	a.routesBecome("10.244.2.0/24 via 127.0.0.82; 10.250.0.0/24 via 127.0.0.82; 10.250.0.5/32 via 127.0.0.82; 10.250.1.1/32 via 127.0.0.82")
	// Withdrawn when b stops announcing it.
	bAdverts.Services = prefixes("10.250.0.0/24", "10.250.1.1/32")
	if c, err := b.sp.Set(ctx, []Peer{b.peerOf(a)}, bAdverts); err != nil || c.PathsRemoved != 1 {
		t.Fatalf("withdrawing one address: %+v %v", c, err)
	}
	a.routesBecome("10.244.2.0/24 via 127.0.0.82; 10.250.0.0/24 via 127.0.0.82; 10.250.1.1/32 via 127.0.0.82")
}

// A draining node (RFC 8326) re-announces everything with
// GRACEFUL_SHUTDOWN and the lowest preference: local-pref 0 to an iBGP
// peer, its AS prepended to an eBGP peer; undrained, everything is as
// before.
func TestDrainLowersEveryAnnouncement(t *testing.T) {
	a := startNode(t, "127.0.0.84", 65001, []string{"10.244.1.0/24"})
	ib := startNode(t, "127.0.0.85", 65001, []string{"10.244.2.0/24"})
	eb := startNode(t, "127.0.0.86", 65002, []string{"10.244.3.0/24"})
	ctx := context.Background()
	scope := prefixes("10.250.0.0/24")
	setA := func(drain bool) {
		t.Helper()
		if _, err := a.sp.Set(ctx, []Peer{a.peerOf(ib), a.peerOf(eb)}, Adverts{Prefixes: a.pods,
			Services: prefixes("10.250.0.7/32"), ServiceScope: scope, Communities: []uint32{65000<<16 | 1}, Drain: drain}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []*node{ib, eb} {
		if _, err := n.sp.Set(ctx, []Peer{n.peerOf(a)}, Adverts{Prefixes: n.pods, ServiceScope: scope}); err != nil {
			t.Fatal(err)
		}
	}
	setA(false)
	normal := map[*node]string{
		ib: "10.244.1.0/24 lp=100 path=[] 65000:1; 10.250.0.7/32 lp=100 path=[] 65000:1",
		eb: "10.244.1.0/24 lp=- path=[65001] 65000:1; 10.250.0.7/32 lp=- path=[65001] 65000:1",
	}
	for n, want := range normal {
		wait.Until(t, 20*time.Second, fmt.Sprintf("%s has a's paths, undrained", n.addr), func() bool { return attrsFrom(t, n.sp, a.addr) == want })
	}
	setA(true)
	drained := map[*node]string{
		ib: "10.244.1.0/24 lp=0 path=[] 65000:1 65535:0; 10.250.0.7/32 lp=0 path=[] 65000:1 65535:0",
		eb: "10.244.1.0/24 lp=- path=[65001 65001 65001 65001] 65000:1 65535:0; 10.250.0.7/32 lp=- path=[65001 65001 65001 65001] 65000:1 65535:0",
	}
	for n, want := range drained {
		wait.Until(t, 20*time.Second, fmt.Sprintf("%s has a's paths drained", n.addr), func() bool { return attrsFrom(t, n.sp, a.addr) == want })
	}
	setA(false)
	for n, want := range normal {
		wait.Until(t, 20*time.Second, fmt.Sprintf("%s has a's paths undrained again", n.addr), func() bool { return attrsFrom(t, n.sp, a.addr) == want })
	}
}

// attrsFrom renders the IPv4 paths s learned from peer: prefix, local-pref
// ("-" when absent), AS path and communities.
func attrsFrom(t *testing.T, s *Speaker, peer netip.Addr) string {
	t.Helper()
	var out []string
	err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_ADJ_IN, Name: peer.String(), Family: bgp.RF_IPv4_UC},
		func(_ bgp.NLRI, ps []*apiutil.Path) {
			for _, p := range ps {
				lp, path := "-", "[]"
				var comms []string
				for _, a := range p.Attrs {
					switch v := a.(type) {
					case *bgp.PathAttributeLocalPref:
						lp = fmt.Sprint(v.Value)
					case *bgp.PathAttributeAsPath:
						var asns []string
						for _, seg := range v.Value {
							for _, as := range seg.GetAS() {
								asns = append(asns, fmt.Sprint(as))
							}
						}
						path = "[" + strings.Join(asns, " ") + "]"
					case *bgp.PathAttributeCommunities:
						for _, c := range v.Value {
							comms = append(comms, fmt.Sprintf("%d:%d", c>>16, c&0xffff))
						}
					}
				}
				out = append(out, strings.Join(append([]string{prefixOf(p).String(), "lp=" + lp, "path=" + path}, comms...), " "))
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return strings.Join(out, "; ")
}

// A peer limited to Service addresses (a router that must not learn the
// pod CIDRs, say) gets only those, and the limit changes live, without a
// session reset.
func TestWithholdFromAPeer(t *testing.T) {
	a := startNode(t, "127.0.0.91", 65001, []string{"10.244.1.0/24"})
	b := startNode(t, "127.0.0.92", 65002, []string{"10.244.2.0/24"})
	ctx := context.Background()
	scope := prefixes("10.250.0.0/24")
	if _, err := b.sp.Set(ctx, []Peer{b.peerOf(a)}, Adverts{Prefixes: b.pods, ServiceScope: scope}); err != nil {
		t.Fatal(err)
	}
	setA := func(w Withhold) Changes {
		t.Helper()
		p := a.peerOf(b)
		p.Withhold = w
		c, err := a.sp.Set(ctx, []Peer{p}, Adverts{Prefixes: a.pods, Services: prefixes("10.250.0.9/32"), ServiceScope: scope})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	setA(Withhold{PodCIDRs: true})
	b.routesBecome("10.250.0.9/32 via 127.0.0.91")
	if c := setA(Withhold{Services: true}); c.PeersAdded+c.PeersRemoved != 0 {
		t.Fatalf("a changed limit reset the session: %+v", c)
	}
	b.routesBecome("10.244.1.0/24 via 127.0.0.91")
	setA(Withhold{})
	b.routesBecome("10.244.1.0/24 via 127.0.0.91; 10.250.0.9/32 via 127.0.0.91")
}
