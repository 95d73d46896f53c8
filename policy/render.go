package policy

import (
	"encoding/binary"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TableName is Petrel's nftables table (family inet). Petrel touches no
// other table.
const TableName = "petrel"

// dropTag marks the last rule of the egress and ingress chains.
const dropTag = "petrel:drop"

func nfSet(t *nftables.Table, s *Set) *nftables.Set {
	ns := &nftables.Set{Table: t, Name: s.Name, Interval: true, KeyType: nftables.TypeIPAddr}
	if s.Family == V6 {
		ns.KeyType = nftables.TypeIP6Addr
	}
	if s.Kind == DstSet {
		ns.Concatenation = true
		ns.KeyType, _ = nftables.ConcatSetType(ns.KeyType, nftables.TypeInetProto, nftables.TypeInetService)
	}
	return ns
}

// elements encodes a set's elements. Address sets are rbtree intervals:
// a start element and an end flag one past the range (none at the very
// top). Concatenated sets take inclusive ranges as key and key-end, every
// field padded to 4 bytes.
func elements(s *Set) []nftables.SetElement {
	n := len(s.Elems)
	if s.Kind != DstSet {
		n *= 2 // a start and an end per range
	}
	out := make([]nftables.SetElement, 0, n)
	for _, e := range s.Elems {
		if s.Kind == DstSet {
			out = append(out, nftables.SetElement{Key: appendDstKey(nil, e.AddrLo, e.ProtoLo, e.PortLo), KeyEnd: appendDstKey(nil, e.AddrHi, e.ProtoHi, e.PortHi)})
			continue
		}
		out = append(out, nftables.SetElement{Key: e.AddrLo.AsSlice()})
		if next := e.AddrHi.Next(); next.IsValid() {
			out = append(out, nftables.SetElement{Key: next.AsSlice(), IntervalEnd: true})
		}
	}
	return out
}

// Offsets in the IPv4 and IPv6 headers, and the registers a concatenated
// lookup reads: the address fills the 16-byte register 1 (32-bit registers
// 8-11) from its start, the protocol and port follow in the next 32-bit
// registers.
var (
	srcOff  = map[Family]uint32{V4: 12, V6: 8}
	dstOff  = map[Family]uint32{V4: 16, V6: 24}
	addrLen = map[Family]uint32{V4: 4, V6: 16}
	protoRg = map[Family]uint32{V4: 9, V6: 12}
	nfproto = map[Family]byte{V4: unix.NFPROTO_IPV4, V6: unix.NFPROTO_IPV6}
)

// stmtExprs renders one compiled statement. sets maps names to the sets in
// this transaction or in the kernel.
func stmtExprs(st Stmt, sets map[string]*nftables.Set) []expr.Any {
	var ex []expr.Any
	f := st.Family
	if f != Any {
		ex = append(ex,
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{nfproto[f]}})
	}
	for _, m := range st.Matches {
		s := sets[m.Set]
		switch m.Field {
		case Saddr, Daddr:
			off := srcOff[f]
			if m.Field == Daddr {
				off = dstOff[f]
			}
			ex = append(ex, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: addrLen[f]})
		case DaddrProtoPort:
			ex = append(ex,
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: dstOff[f], Len: addrLen[f]},
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: protoRg[f]},
				&expr.Payload{DestRegister: protoRg[f] + 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
		}
		ex = append(ex, &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: m.Invert})
	}
	kind := expr.VerdictReturn
	if st.Verdict == Drop {
		kind = expr.VerdictDrop
	}
	return append(ex, &expr.Verdict{Kind: kind})
}

func tag(owner string) []byte {
	return userdata.AppendString(nil, userdata.TypeComment, owner)
}

func ruleOwner(r *nftables.Rule) string {
	s, _ := userdata.GetString(r.UserData, userdata.TypeComment)
	return s
}

// baseRules are the hooked chains' fixed rules: return traffic passes,
// everything else goes through egress (pods sending) and, when forwarded,
// ingress (pods receiving). Traffic the node itself originates (kubelet
// probes) has no output hook here and is never filtered.
func baseRules(t *nftables.Table, fwd, in, eg, ing *nftables.Chain) []*nftables.Rule {
	established := []expr.Any{
		&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binary.NativeEndian.AppendUint32(nil, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Verdict{Kind: expr.VerdictAccept},
	}
	jump := func(c *nftables.Chain) []expr.Any {
		return []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: c.Name}}
	}
	return []*nftables.Rule{
		{Table: t, Chain: fwd, Exprs: established},
		{Table: t, Chain: fwd, Exprs: jump(eg)},
		{Table: t, Chain: fwd, Exprs: jump(ing)},
		{Table: t, Chain: in, Exprs: established},
		{Table: t, Chain: in, Exprs: jump(eg)},
	}
}

// masqRules: from the node's pod CIDRs to anything not exempt, per family.
func masqRules(t *nftables.Table, c *nftables.Chain, sets map[string]*nftables.Set) []*nftables.Rule {
	var out []*nftables.Rule
	for _, f := range []Family{V4, V6} {
		ex := stmtExprs(Stmt{Family: f, Matches: []Match{
			{Field: Saddr, Set: "pods-" + f.String()}, {Field: Daddr, Set: "nomasq-" + f.String(), Invert: true},
		}}, sets)
		ex = append(ex[:len(ex)-1], &expr.Masq{})
		out = append(out, &nftables.Rule{Table: t, Chain: c, Exprs: ex})
	}
	return out
}
