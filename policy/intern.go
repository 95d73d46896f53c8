package policy

import (
	"encoding/binary"
	"hash/maphash"
	"slices"
)

// interned keeps one copy of each distinct set content among the cached
// policies' outputs. Policies often select the same pods or admit the same
// peers (a deny-all and the allow rules beside it; "from the monitoring
// namespace" in every namespace), and each kept its own copy of thousands
// of elements for as long as nothing changed. Sets still have their own
// names in the kernel; only the memory is shared, and compiled elements are
// never written after normalize, so sharing them is safe.
type interned struct {
	seed   maphash.Seed
	byHash map[uint64][]*sharedElems
}

type sharedElems struct {
	elems []Elem
	refs  int
}

func newInterned() interned {
	return interned{seed: maphash.MakeSeed(), byHash: map[uint64][]*sharedElems{}}
}

func (in *interned) hash(es []Elem) uint64 {
	var h maphash.Hash
	h.SetSeed(in.seed)
	var b [38]byte
	for _, e := range es {
		lo, hi := e.AddrLo.As16(), e.AddrHi.As16()
		copy(b[:16], lo[:])
		copy(b[16:32], hi[:])
		b[32], b[33] = e.ProtoLo, e.ProtoHi
		binary.LittleEndian.PutUint16(b[34:], e.PortLo)
		binary.LittleEndian.PutUint16(b[36:], e.PortHi)
		h.Write(b[:])
		if e.AddrLo.Is4() {
			h.WriteByte(4) // an IPv4 address and its mapped IPv6 form differ
		}
	}
	return h.Sum64()
}

// share points each of d's sets at the kept copy of its elements, or keeps
// its elements as the copy.
func (in *interned) share(d *Desired) {
	for _, s := range d.Sets {
		if len(s.Elems) == 0 {
			continue
		}
		h := in.hash(s.Elems)
		if i := slices.IndexFunc(in.byHash[h], func(c *sharedElems) bool { return slices.Equal(c.elems, s.Elems) }); i >= 0 {
			c := in.byHash[h][i]
			s.Elems = c.elems
			c.refs++
			continue
		}
		in.byHash[h] = append(in.byHash[h], &sharedElems{elems: s.Elems, refs: 1})
	}
}

// release forgets d's sets: a copy no set uses any more is dropped.
func (in *interned) release(d *Desired) {
	for _, s := range d.Sets {
		if len(s.Elems) == 0 {
			continue
		}
		h := in.hash(s.Elems)
		list := in.byHash[h]
		i := slices.IndexFunc(list, func(c *sharedElems) bool { return &c.elems[0] == &s.Elems[0] && len(c.elems) == len(s.Elems) })
		if i < 0 {
			continue
		}
		if list[i].refs--; list[i].refs > 0 {
			continue
		}
		if list = slices.Delete(list, i, i+1); len(list) == 0 {
			delete(in.byHash, h)
		} else {
			in.byHash[h] = list
		}
	}
}

// kept is the number of distinct element lists held (for tests).
func (in *interned) kept() int {
	n := 0
	for _, l := range in.byHash {
		n += len(l)
	}
	return n
}
