package route

import (
	"net/netip"
	"slices"
	"strconv"
	"testing"

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
	defer h.Close()
	k, err := OpenKernel(h, rtproto.BGP)
	if err != nil {
		t.Fatal(err)
	}
	defer k.Close()
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
