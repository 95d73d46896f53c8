package route

import (
	"net/netip"
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
	if msgs, _, err := s.Receive(); err != unix.EAGAIN {
		t.Fatalf("own adds reached the socket: %d messages, %v", len(msgs), err)
	}
	if out, err := n.Run("ip", "route", "add", "198.51.100.0/24", "via", "10.0.0.9", "proto", "static"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if errs := k.Apply(nil, nil, add[:1]); errs[0] != nil {
		t.Fatal(errs[0])
	}
	want := []string{"add proto 4", "del proto 61"}
	for _, w := range want {
		msgs, _, err := s.Receive()
		if err != nil || len(msgs) != 1 {
			t.Fatalf("waiting for %q: %d messages, %v", w, len(msgs), err)
		}
		verb := map[uint16]string{unix.RTM_NEWROUTE: "add", unix.RTM_DELROUTE: "del"}[msgs[0].Header.Type]
		if got := verb + " proto " + strconv.Itoa(int(msgs[0].Data[5])); got != w {
			t.Fatalf("got %q, want %q", got, w)
		}
	}
}
