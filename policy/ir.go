package policy

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The compiler's output: named sets and two ordered rule lists, a small
// language that both the nftables renderer and the test evaluator read.

// Family is the IP family a rule or set is about.
type Family uint8

const (
	V4 Family = iota + 1
	V6
	Any // a rule without an address match
)

func familyOf(a netip.Addr) Family {
	if a.Is4() {
		return V4
	}
	return V6
}

func (f Family) String() string { return map[Family]string{V4: "4", V6: "6", Any: "any"}[f] }

// SetKind is what a set's elements are.
type SetKind uint8

const (
	// AddrSet holds address ranges.
	AddrSet SetKind = iota + 1
	// DstSet holds (address range . protocol range . port range).
	DstSet
)

// Set is a named nftables set of one family.
type Set struct {
	Name   string
	Family Family
	Kind   SetKind
	Elems  []Elem
}

// Elem is one set element; AddrSet elements use only the address range.
type Elem struct {
	AddrLo, AddrHi   netip.Addr
	ProtoLo, ProtoHi uint8
	PortLo, PortHi   uint16
}

func (e Elem) String() string {
	s := e.AddrLo.String()
	if e.AddrHi != e.AddrLo {
		s += "-" + e.AddrHi.String()
	}
	if e.ProtoHi == 0 && e.PortHi == 0 {
		return s
	}
	return fmt.Sprintf("%s . %d-%d . %d-%d", s, e.ProtoLo, e.ProtoHi, e.PortLo, e.PortHi)
}

// Field is what a rule looks up in a set.
type Field uint8

const (
	Saddr Field = iota + 1
	Daddr
	DaddrProtoPort
)

// Match is one set lookup of a rule.
type Match struct {
	Field  Field
	Set    string
	Invert bool
}

// Verdict ends a rule that matched.
type Verdict uint8

const (
	Return Verdict = iota + 1 // leave the chain: this direction is allowed
	Drop
)

// Stmt is one rule of the egress or ingress chain. Owner is the policy
// ("namespace/name") whose rules these are, empty for Petrel's own.
type Stmt struct {
	Owner   string
	Family  Family
	Matches []Match
	Verdict Verdict
}

func (r Stmt) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "[%s] ip%s", r.Owner, r.Family)
	for _, m := range r.Matches {
		op := "@"
		if m.Invert {
			op = "!@"
		}
		fmt.Fprintf(&b, " %s %s%s", map[Field]string{Saddr: "saddr", Daddr: "daddr", DaddrProtoPort: "daddr.proto.dport"}[m.Field], op, m.Set)
	}
	fmt.Fprintf(&b, " %s", map[Verdict]string{Return: "return", Drop: "drop"}[r.Verdict])
	return b.String()
}

// Desired is the whole compiled state of Petrel's table.
type Desired struct {
	Sets    map[string]*Set
	Egress  []Stmt // evaluated first for forwarded and pod-to-node traffic
	Ingress []Stmt // evaluated for forwarded traffic after Egress returned
	// Masquerade: traffic from the node's pod CIDRs (set "pods-4/6") to
	// anything outside set "nomasq-4/6" leaves with the node's address.
	Masquerade bool
}

func (d *Desired) set(name string, f Family, k SetKind) *Set {
	if s, ok := d.Sets[name]; ok {
		return s
	}
	s := &Set{Name: name, Family: f, Kind: k}
	d.Sets[name] = s
	return s
}

// normalize sorts and deduplicates every set's elements, merging touching
// or overlapping address ranges of AddrSets (the kernel refuses overlaps).
func (d *Desired) normalize() {
	for _, s := range d.Sets {
		s.normalize()
	}
}

func (s *Set) normalize() {
	slices.SortFunc(s.Elems, compareElem)
	s.Elems = slices.Compact(s.Elems)
	if s.Kind == DstSet {
		s.Elems = disjoint(s.Elems)
	} else {
		s.Elems = mergeSorted(s.Elems)
	}
	s.Elems = exact(s.Elems)
}

// exact returns es in an array of its own length: sets are built by
// appending, and a compiled cluster keeps hundreds of thousands of
// elements for as long as nothing changes (half again as many in the
// spare capacity of the appends).
func exact(es []Elem) []Elem {
	if len(es) == cap(es) {
		return es
	}
	if len(es) == 0 {
		return nil
	}
	return append(make([]Elem, 0, len(es)), es...)
}

func compareElem(a, b Elem) int {
	// Field by field, stopping at the first difference: sets of 10,000
	// elements are sorted at every change.
	if c := a.AddrLo.Compare(b.AddrLo); c != 0 {
		return c
	}
	if c := a.AddrHi.Compare(b.AddrHi); c != 0 {
		return c
	}
	if c := cmp.Compare(a.ProtoLo, b.ProtoLo); c != 0 {
		return c
	}
	if c := cmp.Compare(a.ProtoHi, b.ProtoHi); c != 0 {
		return c
	}
	if c := cmp.Compare(a.PortLo, b.PortLo); c != 0 {
		return c
	}
	return cmp.Compare(a.PortHi, b.PortHi)
}

// prefixRange is the first and last address of p.
func prefixRange(p netip.Prefix) (netip.Addr, netip.Addr) {
	lo := p.Masked().Addr()
	b := lo.AsSlice()
	host := len(b)*8 - p.Bits()
	for i := len(b) - 1; i >= 0 && host > 0; i-- {
		n := min(host, 8)
		b[i] |= byte(1<<n - 1)
		host -= n
	}
	hi, _ := netip.AddrFromSlice(b)
	return lo, hi
}

// blockRanges is an IP block as address ranges: the CIDR minus each except.
func blockRanges(b IPBlock) []Elem {
	lo, hi := prefixRange(b.CIDR)
	out := []Elem{{AddrLo: lo, AddrHi: hi}}
	for _, ex := range b.Except {
		xlo, xhi := prefixRange(ex)
		var next []Elem
		for _, r := range out {
			if xhi.Less(r.AddrLo) || r.AddrHi.Less(xlo) {
				next = append(next, r)
				continue
			}
			if r.AddrLo.Less(xlo) {
				next = append(next, Elem{AddrLo: r.AddrLo, AddrHi: xlo.Prev()})
			}
			if xhi.Less(r.AddrHi) {
				next = append(next, Elem{AddrLo: xhi.Next(), AddrHi: r.AddrHi})
			}
		}
		out = next
	}
	return out
}
