package policy

import "slices"

// The global isolation sets hold every pod some policy isolates: about
// 100,000 contributions for 10,000 pods under 1,000 policies, most of them
// repeats. Rebuilding them at every change was most of an incremental
// sync. The Compiler keeps them instead: a count per element and per set,
// moved only by the policies whose output changed; the sets are rebuilt
// from the counts only then, and reused as they are (the same *Set, which
// the Syncer skips) when nothing changed.

type isoState struct {
	from    map[string]*Desired       // "namespace/name" -> the output counted
	count   map[string]map[Elem]int32 // set name -> element -> contributions
	pending map[string][]Elem         // set name -> pending pods' elements last time
	sets    map[string]*Set           // the sets last built
}

var isoNames = []string{"in-iso-4", "in-iso-6", "eg-iso-4", "eg-iso-6"}

// isolation fills c.out's isolation sets from the policies' outputs (in
// pols order) and the pending pods compile already put there.
func (k *Compiler) isolation(c *compiler, pols []Policy, outs []*Desired) {
	st := &k.iso
	if st.from == nil {
		st.from, st.count, st.pending, st.sets = map[string]*Desired{}, map[string]map[Elem]int32{}, map[string][]Elem{}, map[string]*Set{}
	}
	changed := false
	live := make(map[string]bool, len(pols))
	for i, p := range pols {
		name := p.Namespace + "/" + p.Name
		live[name] = true
		if old := st.from[name]; old != outs[i] {
			st.add(old, -1)
			st.add(outs[i], 1)
			st.from[name] = outs[i]
			changed = true
		}
	}
	for name, old := range st.from {
		if !live[name] {
			st.add(old, -1)
			delete(st.from, name)
			changed = true
		}
	}
	for _, name := range isoNames {
		pend := c.out.Sets[name].Elems // only pending pods so far
		if !slices.Equal(pend, st.pending[name]) {
			st.pending[name] = slices.Clone(pend)
			changed = true
		}
	}
	for _, name := range isoNames {
		if !changed && st.sets[name] != nil {
			c.out.Sets[name] = st.sets[name]
			continue
		}
		set := c.out.Sets[name]
		elems := set.Elems
		for e := range st.count[name] {
			elems = append(elems, e)
		}
		set.Elems = elems
		set.normalize()
		st.sets[name] = set
	}
}

// add counts d's isolation elements n times (1 or -1).
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
		for _, e := range s.Elems {
			if m[e] += n; m[e] <= 0 {
				delete(m, e)
			}
		}
	}
}
