package policy

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// randomBoxes makes elements that overlap on purpose: addresses from a
// handful of small ranges (and sometimes the whole family), protocols
// single or all, ports single, ranges or all.
func randomBoxes(r *rand.Rand, v6 bool, n int) []Elem {
	base := netip.MustParseAddr("10.0.0.0")
	if v6 {
		base = netip.MustParseAddr("fd00::")
	}
	addr := func(i int) netip.Addr {
		a := base
		for range i {
			a = a.Next()
		}
		return a
	}
	protos := [][2]uint8{{6, 6}, {17, 17}, {132, 132}, {0, 255}, {6, 17}}
	var out []Elem
	for range n {
		var e Elem
		switch r.IntN(6) {
		case 0: // the whole family
			lo, hi := prefixRange(netip.PrefixFrom(base, 0))
			e.AddrLo, e.AddrHi = lo, hi
		default:
			lo := r.IntN(14)
			e.AddrLo, e.AddrHi = addr(lo), addr(lo+r.IntN(3))
		}
		p := protos[r.IntN(len(protos))]
		e.ProtoLo, e.ProtoHi = p[0], p[1]
		switch r.IntN(4) {
		case 0:
			e.PortLo, e.PortHi = 0, 65535
		default:
			lo := uint16(r.IntN(10))
			e.PortLo, e.PortHi = lo, lo+uint16(r.IntN(3))
		}
		out = append(out, e)
	}
	return out
}

func contains(es []Elem, a netip.Addr, proto uint8, port uint16) bool {
	s := &Set{Elems: es}
	return s.hasDst(a, proto, port)
}

func overlap(x, y Elem) bool {
	return x.AddrLo.Compare(y.AddrHi) <= 0 && y.AddrLo.Compare(x.AddrHi) <= 0 &&
		x.ProtoLo <= y.ProtoHi && y.ProtoLo <= x.ProtoHi && x.PortLo <= y.PortHi && y.PortLo <= x.PortHi
}

// TestDisjointKeepsTheUnion checks, for thousands of random element lists,
// that the result has no two overlapping elements (what the kernel
// demands) and holds exactly the points the input held.
func TestDisjointKeepsTheUnion(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for c := range 3000 {
		v6 := c%2 == 1
		in := randomBoxes(r, v6, 1+r.IntN(8))
		sorted := slices.Clone(in)
		slices.SortFunc(sorted, compareElem)
		out := disjoint(slices.Compact(sorted))
		for i := range out {
			for j := i + 1; j < len(out); j++ {
				if overlap(out[i], out[j]) {
					t.Fatalf("case %d: %s and %s overlap (input %v)", c, out[i], out[j], in)
				}
			}
		}
		if again := disjoint(slices.Clone(out)); !slices.Equal(again, out) {
			t.Fatalf("case %d: not canonical: %v, then %v", c, out, again)
		}
		base := netip.MustParseAddr("9.255.255.250")
		if v6 {
			base = netip.MustParseAddr("fcff:ffff:ffff:ffff:ffff:ffff:ffff:fffa")
		}
		for a, n := base, 0; n < 26; a, n = a.Next(), n+1 {
			for _, proto := range []uint8{0, 5, 6, 7, 17, 132, 255} {
				for _, port := range []uint16{0, 1, 2, 3, 5, 8, 9, 10, 11, 12, 13, 1000, 65535} {
					if contains(in, a, proto, port) != contains(out, a, proto, port) {
						t.Fatalf("case %d: %s %d %d: input %v, output %v", c, a, proto, port, in, out)
					}
				}
			}
		}
	}
}

// The shapes of the field report: any port next to port 80, a pod inside
// an ipBlock of the same rule.
func TestDisjointFieldShapes(t *testing.T) {
	pod := netip.MustParseAddr("10.244.1.5")
	lo, hi := prefixRange(netip.MustParsePrefix("10.244.0.0/16"))
	set := &Set{Kind: DstSet, Elems: []Elem{
		{AddrLo: pod, AddrHi: pod, ProtoLo: 6, ProtoHi: 6, PortLo: 0, PortHi: 65535},
		{AddrLo: pod, AddrHi: pod, ProtoLo: 6, ProtoHi: 6, PortLo: 80, PortHi: 80},
		{AddrLo: lo, AddrHi: hi, ProtoLo: 6, ProtoHi: 6, PortLo: 443, PortHi: 443},
	}}
	set.normalize()
	got := set.Elems
	var s []string
	for _, e := range got {
		s = append(s, e.String())
	}
	want := []string{
		"10.244.0.0-10.244.1.4 . 6-6 . 443-443",
		"10.244.1.5 . 6-6 . 0-65535",
		"10.244.1.6-10.244.255.255 . 6-6 . 443-443",
	}
	if !slices.Equal(s, want) {
		t.Fatalf("got %q, want %q", s, want)
	}
}
