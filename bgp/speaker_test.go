package bgp

import (
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// Speakers in one process talk over loopback: each listens on its own
// 127.0.0.x at one shared high port, so sessions are told apart by address
// and the test needs no root.
var testPort = int32(20000 + rand.IntN(20000))

type node struct {
	t           *testing.T
	addr        netip.Addr
	asn         uint32
	sp          *Speaker
	pods        []netip.Prefix
	communities []uint32 // on its announcements
}

// Speakers start one at a time: GoBGP's StartBgp sets package-level
// variables, so two starting at once in one process race (tests here do
// not run in parallel; the agent replaces its speaker in one goroutine).

func startNode(t *testing.T, addr string, asn uint32, pods []string, cluster ...string) *node {
	t.Helper()
	if len(cluster) == 0 {
		cluster = []string{"10.244.0.0/16"}
	}
	n := &node{t: t, addr: netip.MustParseAddr(addr), asn: asn}
	cfg := Config{ASN: asn, RouterID: n.addr, ListenPort: testPort, ListenAddresses: []netip.Addr{n.addr}}
	for _, p := range pods {
		n.pods = append(n.pods, netip.MustParsePrefix(p))
	}
	cfg.PodCIDRs = n.pods
	for _, c := range cluster {
		cfg.ClusterCIDRs = append(cfg.ClusterCIDRs, netip.MustParsePrefix(c))
	}
	ctx, cancel := context.WithCancel(context.Background())
	sp, err := New(ctx, cfg, testLogger(), Notify{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); sp.Stop() })
	n.sp = sp
	return n
}

func (n *node) peerOf(o *node) Peer {
	return Peer{Address: o.addr, ASN: o.asn, LocalAddress: n.addr, Port: uint16(testPort),
		ConnectRetry: 2 * time.Second, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second}
}

func (n *node) set(peers ...*node) Changes {
	n.t.Helper()
	var ps []Peer
	for _, o := range peers {
		ps = append(ps, n.peerOf(o))
	}
	c, err := n.sp.Set(context.Background(), ps, Adverts{Prefixes: n.pods, Communities: n.communities})
	if err != nil {
		n.t.Fatal(err)
	}
	return c
}

func render(rs []Route) string {
	var out []string
	for _, r := range rs {
		out = append(out, r.String())
	}
	return strings.Join(out, "; ")
}

// eventually polls f until it returns want: convergence over real TCP
// sessions takes GoBGP's first connect delay of 1-2 s.
func (n *node) routesBecome(want string) {
	n.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var got string
	for time.Now().Before(deadline) {
		rs, err := n.sp.Routes()
		if err != nil {
			n.t.Fatal(err)
		}
		if got = render(rs); got == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	n.t.Fatalf("routes of %s: %q, want %q", n.addr, got, want)
}

func TestAnnounceWithdrawAndIdempotentSet(t *testing.T) {
	a := startNode(t, "127.0.0.2", 65001, []string{"10.244.1.0/24"})
	b := startNode(t, "127.0.0.3", 65002, []string{"10.244.2.0/24"})
	if c := a.set(b); c != (Changes{PeersAdded: 1, PathsAdded: 1}) {
		t.Fatalf("first Set: %+v", c)
	}
	b.set(a)
	b.routesBecome("10.244.1.0/24 via 127.0.0.2")
	a.routesBecome("10.244.2.0/24 via 127.0.0.3")
	if c := a.set(b); c != (Changes{}) {
		t.Fatalf("second Set with the same input changed %+v", c)
	}
	if st := a.sp.PeerStates()[b.addr]; st != "established" {
		t.Fatalf("session after an idempotent Set: %s", st)
	}
	// Withdraw: a stops announcing its CIDR.
	pods := a.pods
	a.pods = nil
	if c := a.set(b); c != (Changes{PathsRemoved: 1}) {
		t.Fatalf("withdrawing Set: %+v", c)
	}
	b.routesBecome("")
	a.pods = pods
	a.set(b)
	b.routesBecome("10.244.1.0/24 via 127.0.0.2")
	// Removing the peer removes what was learned from it.
	a.set()
	a.routesBecome("")
}

func TestImportGuard(t *testing.T) {
	b := startNode(t, "127.0.0.4", 65002, []string{"10.244.2.0/24"})
	// c is misconfigured or hostile: besides a legitimate cluster prefix it
	// announces one outside the cluster and b's own pod CIDR.
	c := startNode(t, "127.0.0.5", 65003, []string{"10.244.3.0/24", "192.168.7.0/24", "10.244.2.0/24"}, "10.244.0.0/16", "192.168.0.0/16")
	b.set(c)
	c.set(b)
	b.routesBecome("10.244.3.0/24 via 127.0.0.5")
	// Not only not routed: the rejected paths are not in b's RIB at all.
	if got := learned(t, b.sp); got != "10.244.3.0/24 from 127.0.0.5" {
		t.Fatalf("b's RIB holds learned paths %q, want only 10.244.3.0/24", got)
	}
	rs, _ := c.sp.Routes()
	if got := render(rs); got != "" {
		t.Fatalf("c learned %q: b must export only its own CIDR, and c holds that one itself", got)
	}
}

func TestSetRejectsBadPeers(t *testing.T) {
	a := startNode(t, "127.0.0.6", 65001, []string{"10.244.1.0/24"})
	for name, p := range map[string]Peer{
		"no asn":         {Address: netip.MustParseAddr("127.0.0.7")},
		"hold too short": {Address: netip.MustParseAddr("127.0.0.7"), ASN: 1, HoldTime: time.Second},
		"keepalive":      {Address: netip.MustParseAddr("127.0.0.7"), ASN: 1, HoldTime: 3 * time.Second, Keepalive: 2 * time.Second},
		"fractional":     {Address: netip.MustParseAddr("127.0.0.7"), ASN: 1, ConnectRetry: 1500 * time.Millisecond},
		"family":         {Address: netip.MustParseAddr("127.0.0.7"), ASN: 1, LocalAddress: netip.MustParseAddr("::1")},
	} {
		if _, err := a.sp.Set(context.Background(), []Peer{p}, Adverts{}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if states := a.sp.PeerStates(); len(states) != 0 {
		t.Fatalf("a rejected Set configured peers: %v", states)
	}
}

func TestSelectRoute(t *testing.T) {
	p := netip.MustParsePrefix("10.244.5.0/24")
	nh := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	cases := []struct {
		paths []candidate
		want  string
	}{
		{[]candidate{{best: true, nextHop: nh("10.0.0.2")}}, "10.244.5.0/24 via 10.0.0.2"},
		{[]candidate{{best: true, nextHop: nh("10.0.0.3")}, {best: true, nextHop: nh("10.0.0.2")}, {best: false, nextHop: nh("10.0.0.4")}},
			"10.244.5.0/24 nexthop via 10.0.0.2 nexthop via 10.0.0.3"},
		{[]candidate{{best: true, local: true}, {best: true, nextHop: nh("10.0.0.2")}}, "none"},
		{[]candidate{{best: true, nextHop: nh("0.0.0.0")}}, "none"},
		{[]candidate{{best: true, nextHop: nh("fd00::2")}}, "none"},
	}
	for i, c := range cases {
		r, ok := selectRoute(p, c.paths)
		got := "none"
		if ok {
			got = r.String()
		}
		if got != c.want {
			t.Errorf("case %d: %s, want %s", i, got, c.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{ASN: 1, RouterID: netip.MustParseAddr("10.0.0.1"), ListenPort: 179,
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}, PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for field, mut := range map[string]func(*Config){
		"asn":          func(c *Config) { c.ASN = 0 },
		"routerID":     func(c *Config) { c.RouterID = netip.MustParseAddr("fd00::1") },
		"listenPort":   func(c *Config) { c.ListenPort = 70000 },
		"grpcAddress":  func(c *Config) { c.GRPCAddress = "0.0.0.0:50051" },
		"podCIDRs[0]":  func(c *Config) { c.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.9.0.0/24")} },
		"clusterCIDRs": func(c *Config) { c.ClusterCIDRs, c.PodCIDRs = nil, nil },
	} {
		c := ok
		mut(&c)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: got %v", field, err)
		}
	}
	for _, good := range []string{"127.0.0.1:50051", "[::1]:50051", "unix:///run/petrel/gobgp.sock"} {
		if err := ValidateGRPCAddress(good); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
}

// testLogger is silent unless PETREL_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("PETREL_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// learned lists the paths in the RIB that came from peers.
func learned(t *testing.T, s *Speaker) string {
	var out []string
	for _, fam := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam}, func(n bgp.NLRI, ps []*apiutil.Path) {
			for _, p := range ps {
				if p.PeerAddress.IsValid() {
					out = append(out, n.String()+" from "+p.PeerAddress.String())
				}
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return strings.Join(out, "; ")
}

// listedRoutes computes the routes from GoBGP's own table, the slow way
// Routes avoids: the mirror kept from events must agree with it.
func listedRoutes(t *testing.T, s *Speaker) string {
	var out []Route
	for _, fam := range []bgp.Family{bgp.RF_IPv4_UC, bgp.RF_IPv6_UC} {
		err := s.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: fam}, func(n bgp.NLRI, ps []*apiutil.Path) {
			var cs []candidate
			for _, p := range ps {
				cs = append(cs, candidate{best: p.Best, local: !p.PeerAddress.IsValid(), nextHop: nextHop(p)})
			}
			if r, ok := selectRoute(n.(*bgp.IPAddrPrefix).Prefix, cs); ok {
				out = append(out, r)
			}
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return render(out)
}

// anycast: b and c (one AS) announce the same prefix to a, which holds it
// as an ECMP route through both.
func anycast(t *testing.T) (a, b, c *node) {
	a = startNode(t, "127.0.0.8", 65001, []string{"10.244.1.0/24"})
	b = startNode(t, "127.0.0.9", 65002, []string{"10.244.9.0/24"})
	c = startNode(t, "127.0.0.10", 65002, []string{"10.244.9.0/24"})
	a.set(b, c)
	b.set(a)
	c.set(a)
	a.routesBecome("10.244.9.0/24 nexthop via 127.0.0.9 nexthop via 127.0.0.10")
	return a, b, c
}

// Two peers announce the same prefix (anycast): an ECMP route; one leaves,
// one next hop remains; the mirror matches GoBGP's table at every step.
func TestECMPAndMirrorMatchesTable(t *testing.T) {
	a, _, c := anycast(t)
	if got := listedRoutes(t, a.sp); got != "10.244.9.0/24 nexthop via 127.0.0.9 nexthop via 127.0.0.10" {
		t.Fatalf("GoBGP's table says %q", got)
	}
	c.pods = nil
	c.set(a)
	a.routesBecome("10.244.9.0/24 via 127.0.0.9")
	if got := listedRoutes(t, a.sp); got != "10.244.9.0/24 via 127.0.0.9" {
		t.Fatalf("GoBGP's table says %q", got)
	}
}

// A session that fell to Idle and came back up on its own before the next
// Set is not recreated by it: that would only reset a working session.
// (The drop is fed as GoBGP's events: a real one depends on timing, as in a
// connection collision.)
func TestSessionBackUpOnItsOwnIsNotRecreated(t *testing.T) {
	a := startNode(t, "127.0.0.11", 65001, []string{"10.244.1.0/24"})
	b := startNode(t, "127.0.0.12", 65002, []string{"10.244.2.0/24"})
	a.set(b)
	b.set(a)
	a.routesBecome("10.244.2.0/24 via 127.0.0.12")
	for _, st := range []bgp.FSMState{bgp.BGP_FSM_IDLE, bgp.BGP_FSM_ACTIVE, bgp.BGP_FSM_OPENSENT, bgp.BGP_FSM_OPENCONFIRM, bgp.BGP_FSM_ESTABLISHED} {
		ev := &apiutil.WatchEventMessage_PeerEvent{Type: apiutil.PEER_EVENT_STATE}
		ev.Peer.State.NeighborAddress, ev.Peer.State.SessionState = b.addr, st
		a.sp.onPeer(ev, time.Now())
	}
	if c := a.set(b); c != (Changes{}) {
		t.Fatalf("Set after the session came back on its own changed %+v", c)
	}
	if st := a.sp.PeerStates()[b.addr]; st != "established" {
		t.Fatalf("session after Set: %s", st)
	}
}
