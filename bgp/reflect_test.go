package bgp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/petrelnet/petrel/bgp/sim"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// TestReflectorClientsComingUpTogetherGetEveryRoute: a route reflector
// whose clients all connect at once must send every client every other
// client's route. GoBGP alone loses some (a client's initial table is read
// before another client's route arrives, and that route's propagation
// still counts the new session as not yet Established; see resend.go):
// before the re-send, about one session in five here missed a route. The
// clients are minimal BGP speakers (bgp/sim), each from its own loopback
// address, so the test needs no root.
func TestReflectorClientsComingUpTogetherGetEveryRoute(t *testing.T) {
	const clients = 30
	rr := netip.MustParseAddr("127.0.2.1")
	cfg := Config{ASN: 64512, RouterID: rr, ListenPort: testPort, ListenAddresses: []netip.Addr{rr},
		ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.128.0.0/16")}, RouteReflector: true}
	var peers []Peer
	cidrs := map[netip.Addr]netip.Prefix{}
	for i := 1; i <= clients; i++ {
		a := netip.AddrFrom4([4]byte{127, 0, 3, byte(i)})
		cidrs[a] = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 128, byte(i), 0}), 24)
		// The reflector waits for the clients to connect (they do not listen).
		peers = append(peers, Peer{Address: a, ASN: 64512, LocalAddress: rr, Port: uint16(testPort) + 1,
			ConnectRetry: time.Minute, HoldTime: 90 * time.Second, Keepalive: 30 * time.Second, RouteReflectorClient: true})
	}
	var mu sync.Mutex
	sessions := map[netip.Addr]*sim.Session{}
	// Closed after the reflector has stopped (cleanups run last first): a
	// session going down under a running GoBGP v4.8.0 races with its own
	// AddPeer (a data race inside GoBGP the race detector reports).
	t.Cleanup(func() {
		for _, s := range sessions {
			s.Close()
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	sp, err := New(ctx, cfg, testLogger(), Notify{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); sp.Stop() })
	if _, err := sp.Set(ctx, peers, Adverts{}); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	for a, cidr := range cidrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Retried as a speaker's connect retry would: GoBGP closes a
			// connection that arrives while the new peer is still Idle.
			var s *sim.Session
			_, err := wait.For(10*time.Second, "session from "+a.String(), func() bool {
				d := net.Dialer{LocalAddr: &net.TCPAddr{IP: a.AsSlice()}, Timeout: 5 * time.Second}
				conn, err := d.Dial("tcp", netip.AddrPortFrom(rr, uint16(testPort)).String())
				if err == nil {
					if s, err = sim.Start(conn, 64512, a, 90*time.Second, []netip.Prefix{cidr}); err != nil {
						conn.Close()
					}
				}
				if err != nil {
					time.Sleep(100 * time.Millisecond)
				}
				return err == nil
			})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			sessions[a] = s
			mu.Unlock()
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	missing := func() string {
		for a, s := range sessions {
			for b, cidr := range cidrs {
				if a != b && !s.Has(cidr, b) {
					return fmt.Sprintf("client %s lacks %s via %s", a, cidr, b)
				}
			}
		}
		return ""
	}
	if _, err := wait.For(20*time.Second, "every client holding every other client's route", func() bool { return missing() == "" }); err != nil {
		t.Fatalf("%v: %s", err, missing())
	}
}
