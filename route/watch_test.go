package route

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/petrelnet/petrel/internal/rtproto"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

// TestWatchSocketDropsOwnAdds: the watch's socket filter keeps the
// notifications of Petrel's own installs out of the socket (thousands of
// them, read for nothing, overflowed it during large updates), and lets
// another protocol's add and Petrel's own deletes through.
func TestWatchSocketDropsOwnAdds(t *testing.T) {
	n, h, k := watchNS(t)
	s, err := watchSocket(h, rtproto.BGP)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.SetReceiveTimeout(&unix.Timeval{Usec: 200_000})
	var add []Route
	for i := range 1000 {
		add = append(add, Route{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 128, byte(i >> 8), byte(i)}), 32),
			NextHops: []netip.Addr{netip.MustParseAddr("10.0.0.2")}})
	}
	for i, err := range k.Apply(add, nil, nil) {
		if err != nil {
			t.Fatalf("add %s: %v", add[i], err)
		}
	}
	// The kernel adds routes of its own meanwhile (IPv6 link-local and
	// multicast routes when the veth's carrier comes up, asynchronously):
	// those pass, as they should. Only Petrel's own adds must not.
	seen := func() (got []string, err error) {
		for {
			msgs, _, err := s.Receive()
			if err != nil {
				return got, err
			}
			for _, m := range msgs {
				verb := map[uint16]string{unix.RTM_NEWROUTE: "add", unix.RTM_DELROUTE: "del"}[m.Header.Type]
				got = append(got, verb+" proto "+strconv.Itoa(int(m.Data[5])))
			}
		}
	}
	got, err := seen()
	if err != unix.EAGAIN {
		t.Fatalf("reading the socket: %v", err)
	}
	if slices.Contains(got, "add proto 61") {
		t.Fatalf("own adds reached the socket: %q", got)
	}
	if out, err := n.Run("ip", "route", "add", "198.51.100.0/24", "via", "10.0.0.9", "proto", "static"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if errs := k.Apply(nil, nil, add[:1]); errs[0] != nil {
		t.Fatal(errs[0])
	}
	got, err = seen()
	if err != unix.EAGAIN {
		t.Fatalf("reading the socket: %v", err)
	}
	for _, w := range []string{"add proto 4", "del proto 61"} {
		if !slices.Contains(got, w) {
			t.Fatalf("got %q, want %q among them", got, w)
		}
	}
	if slices.Contains(got, "add proto 61") {
		t.Fatalf("own add reached the socket: %q", got)
	}
}

// watchNS is a namespace with an uplink (10.0.0.1/24 on up0), its handle
// and a Kernel over it.
func watchNS(t *testing.T) (netnstest.NS, netns.NsHandle, *Kernel) {
	netnstest.RequireRoot(t)
	n := netnstest.New(t, "watch")
	for _, args := range [][]string{
		{"link", "add", "up0", "type", "veth", "peer", "name", "up0p"},
		{"addr", "add", "10.0.0.1/24", "dev", "up0"},
		{"link", "set", "up0", "up"},
		{"link", "set", "up0p", "up"},
	} {
		if out, err := n.Run("ip", args...); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	h, err := netns.GetFromName(n.Name)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	k, err := OpenKernel(h, rtproto.BGP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return n, h, k
}

// TestWatchOtherTablesKeepMemory: a route changing in a table other than
// the main one (an address added: the local table; policy routing) leaves
// Petrel's routes alone, so the watch pokes without calling the memory of
// the table stale (which made the next sync dump the whole table: in the
// middle of a flood of updates, when IPv6 DAD ended on a fresh link, it
// cost a tenth of the install time); the sync it asks for resolves the next
// hops afresh, and one that became a local address is refused.
func TestWatchOtherTablesKeepMemory(t *testing.T) {
	n, h, k := watchNS(t)
	// No IPv6 here: the kernel adds its link-local routes on its own time
	// after a link comes up (fe80::/64 in the main table, rightly called
	// stale), which would race with the changes under test.
	for _, key := range []string{"all", "default"} {
		if out, err := n.Run("sysctl", "-qw", "net.ipv6.conf."+key+".disable_ipv6=1"); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}
	if out, err := n.Run("ip", "-6", "route", "show", "table", "all"); err != nil || strings.TrimSpace(string(out)) != "" {
		t.Fatalf("IPv6 routes left (%v):\n%s", err, out)
	}
	p := New(k, slog.New(slog.NewTextHandler(io.Discard, nil)))
	learned := []Route{{Prefix: netip.MustParsePrefix("10.244.2.0/24"), NextHops: []netip.Addr{netip.MustParseAddr("10.0.0.2")}}}
	forbidden := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	want, _ := p.Resolve(slices.Clone(learned), forbidden)
	if res, err := p.Sync(context.Background(), want); err != nil || res.Replaced != 1 {
		t.Fatalf("sync: %+v %v", res, err)
	}
	pokes := make(chan bool, 64)
	stop, err := Watch(h, rtproto.BGP, func(stale bool) { pokes <- stale })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	for _, args := range [][]string{
		{"route", "add", "198.51.100.0/24", "via", "10.0.0.9", "table", "100"},
		{"addr", "add", "10.0.0.2/32", "dev", "lo"}, // the next hop is now this node's
	} {
		if out, err := n.Run("ip", args...); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	got := 0
	for quiet := time.After(5 * time.Second); ; {
		select {
		case stale := <-pokes:
			if stale {
				t.Fatal("a change outside the main table was reported as stale memory of Petrel's routes")
			}
			got++
			quiet = time.After(300 * time.Millisecond)
			continue
		case <-quiet:
		}
		break
	}
	if got == 0 {
		t.Fatal("no poke after routes changed in other tables")
	}
	// The sync the poke asks for: fresh verdicts, the memory trusted.
	want, rejected := p.Resolve(slices.Clone(learned), forbidden)
	if len(want) != 0 || len(rejected) != 1 || rejected[0].Reason != errLocal.Error() {
		t.Fatalf("after the next hop became local: routes %v, rejected %+v", want, rejected)
	}
	if res, err := p.Sync(context.Background(), want); err != nil || res.Removed != 1 {
		t.Fatalf("sync: %+v %v, want the route removed", res, err)
	}
	if have, err := k.List(); err != nil || len(have) != 0 {
		t.Fatalf("kernel holds %v (%v), want none of Petrel's routes", have, err)
	}
}
