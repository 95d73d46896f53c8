package policy

import "slices"

// The global isolation sets hold every pod some policy isolates: about
// 100,000 contributions for 10,000 pods under 1,000 policies, most of them
// repeats. Rebuilding them at every change was most of an incremental
// sync. The Compiler keeps them instead: a count per element and per set,
// moved only by the policies whose output changed, and the members (the
// elements with a count) as a sorted list patched by the elements that came
// or went. A set is rebuilt only when its members or the pending pods
// changed (a pod relabelled from one isolating policy to another changes
// counts, not members), from the sorted members in one pass; otherwise it
// is reused as it is (the same *Set, which the Syncer skips).

type isoState struct {
	from    map[string]*Desired       // "namespace/name" -> the output counted
	count   map[string]map[Elem]int32 // set name -> element -> contributions
	members map[string][]Elem         // set name -> elements counted, sorted
	delta   map[string]map[Elem]bool  // set name -> elements that came (true) or went since
	pending map[string][]Elem         // set name -> pending pods' elements last time
	sets    map[string]*Set           // the sets last built
	dirty   map[string]bool           // sets whose pending pods changed since
}

var isoNames = []string{"in-iso-4", "in-iso-6", "eg-iso-4", "eg-iso-6"}

// maxPatch is the most elements patched into the sorted members one by
// one; more are merged by sorting again.
const maxPatch = 64

// isolation fills c.out's isolation sets from the policies' outputs (in
// pols order) and the pending pods compile already put there.
func (k *Compiler) isolation(c *compiler, pols []Policy, outs []*Desired) {
	st := &k.iso
	if st.from == nil {
		st.from, st.count, st.members, st.delta = map[string]*Desired{}, map[string]map[Elem]int32{}, map[string][]Elem{}, map[string]map[Elem]bool{}
		st.pending, st.sets, st.dirty = map[string][]Elem{}, map[string]*Set{}, map[string]bool{}
	}
	live := make(map[string]bool, len(pols))
	for i, p := range pols {
		name := p.Namespace + "/" + p.Name
		live[name] = true
		if old := st.from[name]; old != outs[i] {
			st.add(old, -1)
			st.add(outs[i], 1)
			st.from[name] = outs[i]
		}
	}
	for name, old := range st.from {
		if !live[name] {
			st.add(old, -1)
			delete(st.from, name)
		}
	}
	for _, name := range isoNames {
		pend := c.out.Sets[name].Elems // only pending pods so far
		if !slices.Equal(pend, st.pending[name]) {
			st.pending[name] = slices.Clone(pend)
			st.dirty[name] = true
		}
	}
	for _, name := range isoNames {
		if !st.dirty[name] && len(st.delta[name]) == 0 && st.sets[name] != nil {
			c.out.Sets[name] = st.sets[name]
			continue
		}
		st.patch(name)
		set := c.out.Sets[name]
		pend := slices.Clone(set.Elems)
		slices.SortFunc(pend, compareElem)
		set.Elems = mergeAddrs(st.members[name], pend)
		st.sets[name] = set
		st.dirty[name] = false
	}
}

// patch brings the sorted members of a set up to date with its delta.
func (st *isoState) patch(name string) {
	d := st.delta[name]
	if len(d) == 0 {
		return
	}
	m := st.members[name]
	if len(d) > maxPatch {
		m = m[:0]
		for e := range st.count[name] {
			m = append(m, e)
		}
		slices.SortFunc(m, compareElem)
	} else {
		for e, in := range d {
			i, found := slices.BinarySearchFunc(m, e, compareElem)
			switch {
			case in && !found:
				m = slices.Insert(m, i, e)
			case !in && found:
				m = slices.Delete(m, i, i+1)
			}
		}
	}
	st.members[name] = m
	clear(d)
}

// mergeAddrs is the normalised union of two sorted address-interval
// lists: one pass, overlapping and adjacent intervals joined.
func mergeAddrs(a, b []Elem) []Elem {
	out := make([]Elem, 0, len(a)+len(b))
	for len(a) > 0 || len(b) > 0 {
		if len(b) == 0 || (len(a) > 0 && compareElem(a[0], b[0]) <= 0) {
			out = appendMerged(out, a[0])
			a = a[1:]
		} else {
			out = appendMerged(out, b[0])
			b = b[1:]
		}
	}
	return out
}

// mergeSorted is mergeAddrs of one sorted list, in place: each element
// is written at or before the place it was read from.
func mergeSorted(es []Elem) []Elem {
	out := es[:0]
	for _, e := range es {
		out = appendMerged(out, e)
	}
	return out
}

// appendMerged appends e, which sorts after every range of out, joining
// it to the last range when they touch or overlap.
func appendMerged(out []Elem, e Elem) []Elem {
	if n := len(out); n > 0 {
		last := &out[n-1]
		if next := last.AddrHi.Next(); !next.IsValid() || e.AddrLo.Compare(next) <= 0 {
			if e.AddrHi.Compare(last.AddrHi) > 0 {
				last.AddrHi = e.AddrHi
			}
			return out
		}
	}
	return append(out, e)
}

// add counts d's isolation elements n times (1 or -1), noting the
// elements that became or stopped being members.
func (st *isoState) add(d *Desired, n int32) {
	if d == nil {
		return
	}
	for _, name := range isoNames {
		s := d.Sets[name]
		if s == nil {
			continue
		}
		m := st.count[name]
		if m == nil {
			m = map[Elem]int32{}
			st.count[name] = m
		}
		delta := st.delta[name]
		if delta == nil {
			delta = map[Elem]bool{}
			st.delta[name] = delta
		}
		for _, e := range s.Elems {
			old := m[e]
			if m[e] = old + n; m[e] <= 0 {
				delete(m, e)
			}
			if was, is := old > 0, old+n > 0; was != is {
				delta[e] = is
			}
		}
	}
}
