package policy

import (
	"bytes"
	"io"
	"log/slog"
	"net/netip"
	"syscall"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TestTxnMatchesLibrary: the replace transaction Petrel encodes itself is
// the one google/nftables builds for the same table, message by message
// and byte for byte (captured through its test dialer), but for the
// acknowledgements and echoes only the last message asks for.
func TestTxnMatchesLibrary(t *testing.T) {
	in := bigCluster(3000, 60)
	for i := range in.Pods {
		// Every other address: isolation sets of thousands of ranges.
		in.Pods[i].IPs = []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(i >> 7), byte(i << 1)}),
			netip.AddrFrom16([16]byte{0xfd, 0, 14: byte(i >> 7), 15: byte(i << 1)})}
	}
	in.Policies = append(in.Policies, Policy{Namespace: "ns0", Name: "egress", Egress: true, EgressRules: []Rule{{
		Peers: []Peer{{IPBlock: &IPBlock{CIDR: netip.MustParsePrefix("fd00::/8"), Except: []netip.Prefix{netip.MustParsePrefix("fd00::/16")}}},
			{PodSelector: &Selector{}}},
		Ports: []Port{{Protocol: TCP, Number: 443}, {Protocol: UDP, Number: 53, EndPort: 60}},
	}}})
	in.Masquerade = true
	in.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00::/64")}
	in.NoMasquerade = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	d := Compile(in)
	largest := 0
	for _, s := range d.Sets {
		largest = max(largest, len(s.Elems))
	}
	if largest <= elemsPerMessage {
		t.Fatalf("largest set %d elements: the test means sets split over messages", largest)
	}

	var want []netlink.Message
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if req != nil {
			want = append(want, req...)
			return nil, nil
		}
		return []netlink.Message{{Header: netlink.Header{Type: netlink.Error}, Data: make([]byte, 4)}}, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	s := &Syncer{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	tbl := s.table()
	c.DelTable(tbl)
	c.AddTable(tbl)
	ch := s.chains(tbl)
	for _, x := range []*nftables.Chain{ch.fwd, ch.in, ch.eg, ch.ing, ch.post} {
		c.AddChain(x)
	}
	sets := map[string]*nftables.Set{}
	for i, name := range sortedNames(d.Sets) {
		ns := nfSet(tbl, d.Sets[name])
		ns.ID = uint32(i + 1)
		if err := c.AddSet(ns, nil); err != nil {
			t.Fatal(err)
		}
		if err := inMessages(d.Sets[name].Kind, d.Sets[name].Elems, ns, c.SetAddElements); err != nil {
			t.Fatal(err)
		}
		sets[name] = ns
	}
	for _, r := range replaceRules(tbl, ch, d, sets) {
		c.AddRule(r)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}

	w, err := s.encodeReplace(d, true, 1000)
	if err != nil {
		t.Fatal(err)
	}
	w.finish()
	if len(w.buf) > txnSize(d) {
		t.Errorf("transaction of %d bytes, more than its size bound %d: its buffer grew", len(w.buf), txnSize(d))
	}
	got, err := syscall.ParseNetlinkMessage(w.buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d messages, the library %d", len(got), len(want))
	}
	for i := range want {
		g, l := got[i], want[i]
		flags := uint16(l.Header.Flags) &^ (unix.NLM_F_ACK | unix.NLM_F_ECHO)
		if i == len(want)-2 {
			flags |= unix.NLM_F_ACK
		}
		if g.Header.Type != uint16(l.Header.Type) || g.Header.Flags != flags || g.Header.Seq != 1000+uint32(i) {
			t.Fatalf("message %d (%s): type %#x flags %#x seq %d, want type %#x flags %#x seq %d", i, w.what[i],
				g.Header.Type, g.Header.Flags, g.Header.Seq, uint16(l.Header.Type), flags, 1000+i)
		}
		if !bytes.Equal(g.Data, l.Data) {
			t.Fatalf("message %d (%s): %d bytes differ from the library's %d\n got %x\nwant %x", i, w.what[i], len(g.Data), len(l.Data),
				g.Data[:min(len(g.Data), 256)], l.Data[:min(len(l.Data), 256)])
		}
	}
	t.Logf("%d messages, %d bytes, %d sets, largest %d elements", len(got), len(w.buf), len(d.Sets), largest)
}
