package ipam

import (
	"fmt"
	"net/netip"
	"testing"
)

func mustRange(t *testing.T, s string) Range {
	t.Helper()
	r, err := ParseRange(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParseRangeRejects(t *testing.T) {
	for _, s := range []string{"", "10.0.0.0", "10.0.0.1/24", "10.0.0.0/31", "10.0.0.0/32", "fd00::/127", "::ffff:10.0.0.0/120", "nonsense/8"} {
		if _, err := ParseRange(s); err == nil {
			t.Errorf("ParseRange(%q) accepted", s)
		}
	}
}

func TestRangeReservedAndSize(t *testing.T) {
	cases := []struct {
		cidr     string
		size     int
		reserved []string
		usable   []string
	}{
		{"10.0.0.0/24", 253, []string{"10.0.0.0", "10.0.0.1", "10.0.0.255"}, []string{"10.0.0.2", "10.0.0.254"}},
		{"10.0.0.0/30", 1, []string{"10.0.0.0", "10.0.0.1", "10.0.0.3"}, []string{"10.0.0.2"}},
		{"fd00::/120", 254, []string{"fd00::", "fd00::1"}, []string{"fd00::2", "fd00::ff"}},
		{"fd00::/64", 1 << 62, nil, []string{"fd00::ffff:ffff:ffff:ffff"}},
	}
	for _, c := range cases {
		r := mustRange(t, c.cidr)
		if got := r.Size(); got != c.size {
			t.Errorf("%s: Size = %d, want %d", c.cidr, got, c.size)
		}
		for _, a := range c.reserved {
			if r.Contains(netip.MustParseAddr(a)) {
				t.Errorf("%s: %s should be reserved", c.cidr, a)
			}
		}
		for _, a := range c.usable {
			if !r.Contains(netip.MustParseAddr(a)) {
				t.Errorf("%s: %s should be usable", c.cidr, a)
			}
		}
	}
}

func TestNextRoundRobin(t *testing.T) {
	r := mustRange(t, "10.0.0.0/29") // usable .2 - .6
	used := map[netip.Addr]bool{}
	isUsed := func(a netip.Addr) bool { return used[a] }
	var last netip.Addr
	var got []string
	for range 5 {
		a, ok := r.Next(last, len(used), isUsed)
		if !ok {
			t.Fatalf("range exhausted early after %v", got)
		}
		used[a], last = true, a
		got = append(got, a.String())
	}
	want := "[10.0.0.2 10.0.0.3 10.0.0.4 10.0.0.5 10.0.0.6]"
	if s := fmt.Sprint(got); s != want {
		t.Fatalf("allocation order %s, want %s", s, want)
	}
	if a, ok := r.Next(last, len(used), isUsed); ok {
		t.Fatalf("full range handed out %s", a)
	}
	// Release .3: the next allocation wraps to it, not to the released .6
	// before every other address was tried.
	delete(used, netip.MustParseAddr("10.0.0.3"))
	a, ok := r.Next(last, len(used), isUsed)
	if !ok || a.String() != "10.0.0.3" {
		t.Fatalf("after release got %v %v, want 10.0.0.3", a, ok)
	}
	// A released address is not reused at once while others are free.
	delete(used, netip.MustParseAddr("10.0.0.4"))
	delete(used, netip.MustParseAddr("10.0.0.5"))
	if a, _ := r.Next(netip.MustParseAddr("10.0.0.4"), len(used), isUsed); a.String() != "10.0.0.5" {
		t.Fatalf("got %s, want 10.0.0.5 (the one after the last allocation)", a)
	}
}

func TestNextIPv6WrapsAtEnd(t *testing.T) {
	r := mustRange(t, "fd00::/126") // ::2, ::3 usable
	a, ok := r.Next(netip.MustParseAddr("fd00::3"), 0, func(netip.Addr) bool { return false })
	if !ok || a.String() != "fd00::2" {
		t.Fatalf("got %v %v, want fd00::2 after wrap", a, ok)
	}
}
