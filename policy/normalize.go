package policy

import (
	"net/netip"
	"slices"
)

// nftables refuses overlapping elements in a concatenated interval set
// (EEXIST for the whole transaction), while NetworkPolicy overlaps freely:
// any port next to port 80, a port range around a single port, a pod inside
// an ipBlock of the same rule, nested ipBlocks, two named ports resolving to
// one number. disjoint rewrites the union of a DstSet's elements — boxes
// over address × protocol × port — as disjoint boxes that cover exactly the
// same points, in a canonical order: equal unions give equal element lists.
//
// Elements whose address ranges overlap no other's pass through untouched,
// so the common set (pods crossed with a few ports) costs a sort; only runs
// of elements whose address ranges chain together are decomposed, by a
// sweep over their address boundaries.
func disjoint(es []Elem) []Elem {
	// es is sorted by compareElem (Set.normalize). Most sets have no
	// overlap at all: they are returned as they are.
	var out []Elem
	changed := false
	for start := 0; start < len(es); {
		end, hi := start+1, es[start].AddrHi
		for end < len(es) && es[end].AddrLo.Compare(hi) <= 0 {
			if es[end].AddrHi.Compare(hi) > 0 {
				hi = es[end].AddrHi
			}
			end++
		}
		run := es[start:end]
		swept := len(run) > 16 || overlapping(run)
		if swept && !changed {
			out, changed = append(make([]Elem, 0, len(es)), es[:start]...), true
		}
		switch {
		case swept:
			out = append(out, sweepAddrs(run)...)
		case changed:
			out = append(out, run...)
		}
		start = end
	}
	if !changed {
		return es
	}
	slices.SortFunc(out, compareElem)
	return out
}

// overlapping reports whether two elements of a run share a point. Most
// runs are short (a pod's few ports), where a pairwise check is cheapest;
// longer ones are swept.
func overlapping(run []Elem) bool {
	for i := range run {
		for j := i + 1; j < len(run); j++ {
			x, y := run[i], run[j]
			if x.AddrLo.Compare(y.AddrHi) <= 0 && y.AddrLo.Compare(x.AddrHi) <= 0 &&
				x.ProtoLo <= y.ProtoHi && y.ProtoLo <= x.ProtoHi && x.PortLo <= y.PortHi && y.PortLo <= x.PortHi {
				return true
			}
		}
	}
	return false
}

// rect is a box's protocol × port part, bounds inclusive.
type rect struct{ protoLo, protoHi, portLo, portHi int }

// bound is an address boundary; end marks the point past the top address.
type bound struct {
	a   netip.Addr
	end bool
}

func (b bound) compare(o bound) int {
	switch {
	case b.end && o.end:
		return 0
	case b.end:
		return 1
	case o.end:
		return -1
	}
	return b.a.Compare(o.a)
}

func after(a netip.Addr) bound {
	if n := a.Next(); n.IsValid() {
		return bound{a: n}
	}
	return bound{end: true}
}

// sweepAddrs decomposes a run of elements along the address axis: between
// two consecutive boundaries the covering elements are fixed, and their
// protocol × port union is decomposed in turn. Consecutive address slices
// with the same decomposition are joined.
func sweepAddrs(es []Elem) []Elem {
	bounds := make([]bound, 0, 2*len(es))
	for _, e := range es {
		bounds = append(bounds, bound{a: e.AddrLo}, after(e.AddrHi))
	}
	slices.SortFunc(bounds, bound.compare)
	bounds = slices.CompactFunc(bounds, func(x, y bound) bool { return x.compare(y) == 0 })
	var out []Elem
	var cur []rect // decomposition of the open group
	var curLo netip.Addr
	var curHi netip.Addr
	flush := func() {
		for _, r := range cur {
			out = append(out, Elem{AddrLo: curLo, AddrHi: curHi, ProtoLo: uint8(r.protoLo), ProtoHi: uint8(r.protoHi),
				PortLo: uint16(r.portLo), PortHi: uint16(r.portHi)})
		}
		cur = nil
	}
	var active []Elem // the elements covering the current slice
	next := 0         // es is sorted by AddrLo: the next to become active
	for i := 0; i+1 < len(bounds); i++ {
		lo := bounds[i].a
		hi := bounds[i+1].a.Prev()
		if bounds[i+1].end {
			hi = lastAddr(lo)
		}
		active = slices.DeleteFunc(active, func(e Elem) bool { return e.AddrHi.Compare(lo) < 0 })
		for ; next < len(es) && es[next].AddrLo.Compare(lo) <= 0; next++ {
			active = append(active, es[next])
		}
		rs := make([]rect, 0, len(active))
		for _, e := range active {
			rs = append(rs, rect{int(e.ProtoLo), int(e.ProtoHi), int(e.PortLo), int(e.PortHi)})
		}
		d := sweepProtos(rs)
		if cur != nil && slices.Equal(d, cur) && curHi.Next() == lo {
			curHi = hi
			continue
		}
		flush()
		cur, curLo, curHi = d, lo, hi
	}
	flush()
	return out
}

// lastAddr is the top address of a's family.
func lastAddr(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.AddrFrom4([4]byte{255, 255, 255, 255})
	}
	var b [16]byte
	for i := range b {
		b[i] = 0xff
	}
	return netip.AddrFrom16(b)
}

// sweepProtos decomposes a union of rectangles along the protocol axis,
// joining consecutive protocol slices with the same port intervals.
func sweepProtos(rs []rect) []rect {
	if len(rs) == 0 {
		return nil
	}
	var bounds []int
	for _, r := range rs {
		bounds = append(bounds, r.protoLo, r.protoHi+1)
	}
	slices.Sort(bounds)
	bounds = slices.Compact(bounds)
	var out []rect
	var open []rect // the group being extended: same port intervals
	for i := 0; i+1 < len(bounds); i++ {
		lo, hi := bounds[i], bounds[i+1]-1
		var ports [][2]int
		for _, r := range rs {
			if r.protoLo <= lo && hi <= r.protoHi {
				ports = append(ports, [2]int{r.portLo, r.portHi})
			}
		}
		ports = mergeIntervals(ports)
		if len(open) > 0 && open[0].protoHi+1 == lo && samePorts(open, ports) {
			for j := range open {
				open[j].protoHi = hi
			}
			continue
		}
		out = append(out, open...)
		open = nil
		for _, p := range ports {
			open = append(open, rect{lo, hi, p[0], p[1]})
		}
	}
	return append(out, open...)
}

func samePorts(open []rect, ports [][2]int) bool {
	return slices.EqualFunc(open, ports, func(r rect, p [2]int) bool { return r.portLo == p[0] && r.portHi == p[1] })
}

// mergeIntervals is the union of inclusive intervals as sorted disjoint
// ones, touching intervals joined.
func mergeIntervals(iv [][2]int) [][2]int {
	slices.SortFunc(iv, func(a, b [2]int) int { return a[0] - b[0] })
	var out [][2]int
	for _, x := range iv {
		if n := len(out); n > 0 && x[0] <= out[n-1][1]+1 {
			out[n-1][1] = max(out[n-1][1], x[1])
			continue
		}
		out = append(out, x)
	}
	return out
}
