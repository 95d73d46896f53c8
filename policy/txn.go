package policy

import (
	"encoding/binary"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// txn is one nftables transaction encoded straight into the buffer that is
// sent: the messages google/nftables would build for the same objects,
// byte for byte (TestTxnMatchesLibrary), without its intermediate
// attribute lists, per-element byte slices and the copy it concatenates
// them into. At 10,000 pods and 1,000 policies the whole table is 300,000
// set elements; that took four times the transaction's size while it was
// built and sent, at every start and periodic resync.
//
// No message asks for an acknowledgement but the last one: the kernel
// reports every error anyway, and the last message's acknowledgement says
// the whole batch has been answered.
type txn struct {
	buf  []byte
	base uint32   // sequence number of the batch's first message
	what []string // what each message is, by sequence number - base
	last int      // offset of the last nftables message
}

func newTxn(size int, seq uint32) *txn {
	w := &txn{buf: make([]byte, 0, size), base: seq}
	w.control(unix.NFNL_MSG_BATCH_BEGIN)
	return w
}

// finish asks for the last message's acknowledgement and ends the batch.
func (w *txn) finish() (done uint32) {
	flags := binary.NativeEndian.Uint16(w.buf[w.last+6:])
	binary.NativeEndian.PutUint16(w.buf[w.last+6:], flags|unix.NLM_F_ACK)
	done = binary.NativeEndian.Uint32(w.buf[w.last+8:])
	w.control(unix.NFNL_MSG_BATCH_END)
	return done
}

func (w *txn) control(typ uint16) {
	at := w.header(typ, unix.NLM_F_REQUEST, "batch")
	w.buf = append(w.buf, unix.AF_UNSPEC, unix.NFNETLINK_V0)
	w.buf = binary.BigEndian.AppendUint16(w.buf, unix.NFNL_SUBSYS_NFTABLES)
	w.close(at)
}

func (w *txn) header(typ, flags uint16, what string) int {
	at := len(w.buf)
	seq := w.base + uint32(len(w.what))
	w.what = append(w.what, what)
	w.buf = binary.NativeEndian.AppendUint32(w.buf, 0) // length, set by close
	w.buf = binary.NativeEndian.AppendUint16(w.buf, typ)
	w.buf = binary.NativeEndian.AppendUint16(w.buf, flags)
	w.buf = binary.NativeEndian.AppendUint32(w.buf, seq)
	w.buf = binary.NativeEndian.AppendUint32(w.buf, 0) // port id: the kernel's
	return at
}

// msg starts an nftables message about family inet.
func (w *txn) msg(typ, flags uint16, what string) int {
	at := w.header(unix.NFNL_SUBSYS_NFTABLES<<8|typ, unix.NLM_F_REQUEST|flags, what)
	w.last = at
	w.buf = append(w.buf, unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0)
	return at
}

func (w *txn) close(at int) {
	binary.NativeEndian.PutUint32(w.buf[at:], uint32(len(w.buf)-at))
}

func (w *txn) pad() {
	for len(w.buf)%4 != 0 {
		w.buf = append(w.buf, 0)
	}
}

func (w *txn) attr(typ uint16, data []byte) {
	w.buf = binary.NativeEndian.AppendUint16(w.buf, uint16(4+len(data)))
	w.buf = binary.NativeEndian.AppendUint16(w.buf, typ)
	w.buf = append(w.buf, data...)
	w.pad()
}

func (w *txn) str(typ uint16, s string) {
	w.buf = binary.NativeEndian.AppendUint16(w.buf, uint16(4+len(s)+1))
	w.buf = binary.NativeEndian.AppendUint16(w.buf, typ)
	w.buf = append(append(w.buf, s...), 0)
	w.pad()
}

func (w *txn) u32(typ uint16, v uint32) {
	w.attr(typ, binary.BigEndian.AppendUint32(make([]byte, 0, 4), v))
}

// open starts an attribute holding others; shut sets its length.
func (w *txn) open(typ uint16) int {
	at := len(w.buf)
	w.buf = binary.NativeEndian.AppendUint16(w.buf, 0)
	w.buf = binary.NativeEndian.AppendUint16(w.buf, typ)
	return at
}

func (w *txn) shut(at int) {
	binary.NativeEndian.PutUint16(w.buf[at:], uint16(len(w.buf)-at))
}

func (w *txn) table(typ uint16, flags uint16, name string) {
	at := w.msg(typ, flags, "table "+name)
	w.str(unix.NFTA_TABLE_NAME, name)
	w.u32(unix.NFTA_TABLE_FLAGS, 0)
	w.close(at)
}

func (w *txn) chain(c *nftables.Chain) {
	at := w.msg(unix.NFT_MSG_NEWCHAIN, unix.NLM_F_CREATE, "chain "+c.Name)
	w.str(unix.NFTA_CHAIN_TABLE, c.Table.Name)
	w.str(unix.NFTA_CHAIN_NAME, c.Name)
	if c.Hooknum != nil && c.Priority != nil {
		hook := w.open(unix.NLA_F_NESTED | unix.NFTA_CHAIN_HOOK)
		w.u32(unix.NFTA_HOOK_HOOKNUM, uint32(*c.Hooknum))
		w.u32(unix.NFTA_HOOK_PRIORITY, uint32(*c.Priority))
		w.shut(hook)
	}
	if c.Policy != nil {
		w.u32(unix.NFTA_CHAIN_POLICY, uint32(*c.Policy))
	}
	if c.Type != "" {
		w.str(unix.NFTA_CHAIN_TYPE, string(c.Type))
	}
	w.close(at)
}

// set creates ns (an nfSet: an interval set, concatenated for DstSet)
// with s's elements, elemsPerMessage to a message.
func (w *txn) set(ns *nftables.Set, s *Set) {
	at := w.msg(unix.NFT_MSG_NEWSET, unix.NLM_F_CREATE, "set "+ns.Name)
	w.str(unix.NFTA_SET_TABLE, ns.Table.Name)
	w.str(unix.NFTA_SET_NAME, ns.Name)
	flags := uint32(unix.NFT_SET_INTERVAL)
	if ns.Concatenation {
		flags |= nftables.NFT_SET_CONCAT
	}
	w.u32(unix.NFTA_SET_FLAGS, flags)
	key := ns.KeyType
	w.u32(unix.NFTA_SET_KEY_TYPE, key.GetNFTMagic())
	w.u32(unix.NFTA_SET_KEY_LEN, key.Bytes)
	w.u32(unix.NFTA_SET_ID, ns.ID)
	if ns.Concatenation {
		desc := w.open(unix.NLA_F_NESTED | unix.NFTA_SET_DESC)
		concat := w.open(unix.NLA_F_NESTED | nftables.NFTA_SET_DESC_CONCAT)
		for _, f := range nftables.ConcatSetTypeElements(key) {
			field := w.open(unix.NFTA_SET_DESC_SIZE)
			w.u32(unix.NFTA_DATA_VALUE, f.Bytes)
			w.shut(field)
		}
		w.shut(concat)
		w.shut(desc)
	}
	w.attr(unix.NFTA_SET_USERDATA, userdata.AppendUint32(nil, userdata.NFTNL_UDATA_SET_KEYBYTEORDER, 2))
	w.close(at)
	for es := s.Elems; len(es) > 0; {
		n := min(len(es), elemsPerMessage)
		w.elements(ns, s.Kind, es[:n])
		es = es[n:]
	}
}

// elements encodes as elements() does: address ranges as a start and an
// interval end one past the range, DstSet elements as key and key end.
func (w *txn) elements(ns *nftables.Set, kind SetKind, es []Elem) {
	at := w.msg(unix.NFT_MSG_NEWSETELEM, unix.NLM_F_CREATE, "elements of set "+ns.Name)
	w.str(unix.NFTA_SET_NAME, ns.Name)
	w.u32(unix.NFTA_LOOKUP_SET_ID, ns.ID)
	w.str(unix.NFTA_SET_TABLE, ns.Table.Name)
	list := w.open(unix.NLA_F_NESTED | unix.NFTA_SET_ELEM_LIST_ELEMENTS)
	var i uint16
	var k, kEnd [24]byte
	item := func(flags uint32, key, keyEnd []byte) {
		i++
		it := w.open(unix.NLA_F_NESTED | i)
		if flags != 0 {
			w.u32(unix.NFTA_SET_ELEM_FLAGS|unix.NLA_F_NESTED, flags)
		}
		kn := w.open(unix.NLA_F_NESTED | unix.NFTA_SET_ELEM_KEY)
		w.attr(unix.NFTA_DATA_VALUE, key)
		w.shut(kn)
		if keyEnd != nil {
			kn := w.open(unix.NLA_F_NESTED | nftables.NFTA_SET_ELEM_KEY_END)
			w.attr(unix.NFTA_DATA_VALUE, keyEnd)
			w.shut(kn)
		}
		w.shut(it)
	}
	for _, e := range es {
		if kind == DstSet {
			item(0, appendDstKey(k[:0], e.AddrLo, e.ProtoLo, e.PortLo), appendDstKey(kEnd[:0], e.AddrHi, e.ProtoHi, e.PortHi))
			continue
		}
		item(0, appendAddr(k[:0], e.AddrLo), nil)
		if next := e.AddrHi.Next(); next.IsValid() {
			item(unix.NFT_SET_ELEM_INTERVAL_END, appendAddr(k[:0], next), nil)
		}
	}
	w.shut(list)
	w.close(at)
}

func (w *txn) rule(r *nftables.Rule, what string) error {
	at := w.msg(unix.NFT_MSG_NEWRULE, unix.NLM_F_CREATE|unix.NLM_F_APPEND, what)
	w.str(unix.NFTA_RULE_TABLE, r.Table.Name)
	w.str(unix.NFTA_RULE_CHAIN, r.Chain.Name)
	list := w.open(unix.NLA_F_NESTED | unix.NFTA_RULE_EXPRESSIONS)
	for _, e := range r.Exprs {
		b, err := expr.Marshal(byte(r.Table.Family), e)
		if err != nil {
			return err
		}
		w.attr(unix.NLA_F_NESTED|unix.NFTA_LIST_ELEM, b)
	}
	w.shut(list)
	if r.UserData != nil {
		w.attr(unix.NFTA_RULE_USERDATA, r.UserData)
	}
	w.close(at)
	return nil
}

func appendAddr(b []byte, a netip.Addr) []byte {
	if a.Is4() {
		v := a.As4()
		return append(b, v[:]...)
	}
	v := a.As16()
	return append(b, v[:]...)
}

// appendDstKey is a DstSet key: address, protocol and port, each field
// padded to 4 bytes.
func appendDstKey(b []byte, a netip.Addr, proto uint8, port uint16) []byte {
	b = appendAddr(b, a)
	b = append(b, proto, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, port)
	return append(b, 0, 0)
}

// txnSize is an upper bound of a replace transaction's size, so that its
// buffer is allocated once: every element's exact encoding, and room for
// the rest.
func txnSize(d *Desired) int {
	n := 64 << 10
	for _, s := range d.Sets {
		per := 2*4 + 2*(4+4+16) + 8 // an address range: start and end item (with its flags), IPv6
		if s.Kind == DstSet {
			per = 4 + 2*(4+4+24) // key and key end, IPv6
		}
		n += 512 + len(s.Elems)*per + (len(s.Elems)/elemsPerMessage+1)*(64+2*len(s.Name))
	}
	return n + (len(d.Egress)+len(d.Ingress))*2048 // a rule: up to three lookups and its owner's name
}
