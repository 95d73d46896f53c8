package policy

import "net/netip"

// Allowed evaluates the compiled chains for the first packet of a new
// connection from src to dst, as the forward hook does: egress, then
// ingress. It is the reference the kernel tests compare real packets with,
// and what the compiler's table tests probe.
func (d *Desired) Allowed(src, dst netip.Addr, proto Protocol, port uint16) bool {
	return d.run(d.Egress, src, dst, proto, port) && d.run(d.Ingress, src, dst, proto, port)
}

// run walks one chain; false means a drop.
func (d *Desired) run(chain []Stmt, src, dst netip.Addr, proto Protocol, port uint16) bool {
	f := familyOf(src)
	for _, st := range chain {
		if st.Family != Any && st.Family != f {
			continue
		}
		if !d.matchAll(st.Matches, src, dst, proto, port) {
			continue
		}
		return st.Verdict == Return
	}
	return true
}

func (d *Desired) matchAll(ms []Match, src, dst netip.Addr, proto Protocol, port uint16) bool {
	for _, m := range ms {
		s := d.Sets[m.Set]
		var hit bool
		switch m.Field {
		case Saddr:
			hit = s.hasAddr(src)
		case Daddr:
			hit = s.hasAddr(dst)
		case DaddrProtoPort:
			hit = s.hasDst(dst, uint8(proto), port)
		}
		if hit == m.Invert {
			return false
		}
	}
	return true
}

func (s *Set) hasAddr(a netip.Addr) bool {
	for _, e := range s.Elems {
		if inRange(a, e) {
			return true
		}
	}
	return false
}

func (s *Set) hasDst(a netip.Addr, proto uint8, port uint16) bool {
	for _, e := range s.Elems {
		if inRange(a, e) && e.ProtoLo <= proto && proto <= e.ProtoHi && e.PortLo <= port && port <= e.PortHi {
			return true
		}
	}
	return false
}

func inRange(a netip.Addr, e Elem) bool {
	return a.BitLen() == e.AddrLo.BitLen() && e.AddrLo.Compare(a) <= 0 && a.Compare(e.AddrHi) <= 0
}
