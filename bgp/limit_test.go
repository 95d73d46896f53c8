package bgp

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// TestPrefixLimitWaitsInsteadOfFlapping: a peer sending ten times its limit
// is shut down and stays down (no Set recreates it) until its wait is over;
// tried again and still over, it waits twice as long; a raised limit brings
// it back at once.
func TestPrefixLimitWaitsInsteadOfFlapping(t *testing.T) {
	ctx := context.Background()
	a := startNode(t, "127.0.0.51", 65001, []string{"10.244.1.0/24"}, "10.0.0.0/8")
	a.sp.cfg.PrefixLimitWait = 2 * time.Second
	f := startNode(t, "127.0.0.52", 65002, []string{"10.100.0.0/16"}, "10.0.0.0/8")
	flood := make([]netip.Prefix, 1000)
	for i := range flood {
		flood[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 100, byte(i >> 8), byte(i)}), 32)
	}
	if _, err := f.sp.Set(ctx, []Peer{f.peerOf(a)}, Adverts{Prefixes: flood}); err != nil {
		t.Fatal(err)
	}
	peer := a.peerOf(f)
	peer.MaxPrefixes = 100
	set := func() Changes {
		t.Helper()
		c, err := a.sp.Set(ctx, []Peer{peer}, Adverts{Prefixes: a.pods})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	set()
	state := func() string { return a.sp.PeerStates()[f.addr] }
	wait.Equal(t, 20*time.Second, "the flooding peer shut down", "prefix-limit", state)
	start := time.Now()
	for time.Since(start) < time.Second {
		if c := set(); c.PeersAdded != 0 {
			t.Fatalf("the peer was recreated %s after its prefix-limit shutdown", time.Since(start))
		}
		if st := state(); st != "prefix-limit" {
			t.Fatalf("state %q during the wait", st)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if l := a.sp.limited[f.addr]; l.wait != 2*time.Second {
		t.Fatalf("first wait %s, want 2s", l.wait)
	}
	// The wait over, one retry; still flooding, it waits twice as long.
	wait.Until(t, 10*time.Second, "retried once the wait is over", func() bool { return set().PeersAdded == 1 })
	wait.Until(t, 20*time.Second, "shut down again, waiting 4s", func() bool {
		a.sp.mu.Lock()
		defer a.sp.mu.Unlock()
		return a.sp.states[f.addr] == "prefix-limit" && a.sp.limited[f.addr].wait == 4*time.Second
	})
	// A limit that fits: recreated at once, Established, every route learned.
	peer.MaxPrefixes = 5000
	if c := set(); c.PeersAdded != 1 {
		t.Fatalf("a changed limit did not recreate the peer: %+v", c)
	}
	wait.Equal(t, 30*time.Second, "established with the raised limit", "established", state)
	wait.Until(t, 20*time.Second, "all 1000 routes learned", func() bool { rs, _ := a.sp.Routes(); return len(rs) == 1000 })
}

func TestDefaultMaxPrefixes(t *testing.T) {
	p := netip.MustParsePrefix
	cfg := Config{PodCIDRs: []netip.Prefix{p("10.244.1.0/24"), p("fd00:10:244:1::/64")},
		ClusterCIDRs: []netip.Prefix{p("10.244.0.0/16"), p("fd00:10:244::/56")}, ImportExtras: []netip.Prefix{p("192.0.2.0/24")}}
	if got := DefaultMaxPrefixes(cfg, true); got != 2*256+1024+1024 {
		t.Fatalf("IPv4: %d", got)
	}
	if got := DefaultMaxPrefixes(cfg, false); got != 2*256+1024 {
		t.Fatalf("IPv6: %d", got)
	}
	cfg.ClusterCIDRs = []netip.Prefix{p("10.0.0.0/8")}
	if got := DefaultMaxPrefixes(cfg, true); got != 65536 {
		t.Fatalf("capped: %d", got)
	}
}

// TestCountIsAnUpperBound: announcements count, withdrawals do not (a
// withdrawal of something never sent must not make room for more), and a
// peer past its limit is handed to the exact count once, not at every
// further UPDATE.
func TestCountIsAnUpperBound(t *testing.T) {
	c := newCounter()
	peer := netip.MustParseAddr("10.0.0.1")
	c.setLimits(map[netip.Addr]Peer{peer: {Address: peer, MaxPrefixes: 3}}, Config{})
	update := func(withdraw bool, prefixes ...string) {
		var ps []*apiutil.Path
		for _, s := range prefixes {
			n, err := bgp.NewIPAddrPrefix(netip.MustParsePrefix(s))
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, &apiutil.Path{Nlri: n, PeerAddress: peer, Withdrawal: withdraw})
		}
		c.counted(ps)
	}
	due := func() bool {
		select {
		case <-c.due:
			return true
		default:
			return false
		}
	}
	update(false, "10.1.0.0/24", "10.1.1.0/24", "10.1.2.0/24")
	update(true, "10.9.0.0/24", "10.9.1.0/24", "10.9.2.0/24")
	if due() {
		t.Fatal("three prefixes, limit three: counted as over")
	}
	update(false, "10.1.3.0/24")
	if !due() {
		t.Fatal("a fourth announcement after three withdrawals of prefixes never sent was not counted as over the limit of three")
	}
	update(false, "10.1.4.0/24", "10.1.5.0/24")
	if due() {
		t.Fatal("asked for an exact count again while one is due")
	}
}
