package policy_test

import (
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/policy"
)

// TestGeneratedPoliciesProgramTheKernel applies thousands of random
// policies (seeded; the shapes overlap on purpose) to a real nftables table
// in a throwaway namespace, alternating whole-table replacement and
// incremental updates from the previous case. The kernel must accept every
// one, and every set read back from the kernel must hold exactly the
// elements the compiler rendered. A failure names the seed, the case and
// the policy that the kernel refused alone.
func TestGeneratedPoliciesProgramTheKernel(t *testing.T) {
	netnstest.RequireRoot(t)
	n := netnstest.New(t, "gen")
	h, err := netns.GetFromName(n.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	syncer, err := policy.NewSyncer(h, quiet)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := nftables.New(nftables.WithNetNSFd(int(h)))
	if err != nil {
		t.Fatal(err)
	}
	const seed = 2
	total := 0
	for c, in := range generatedInputs(seed, 450, 8) {
		d := policy.Compile(in)
		if c%2 == 0 {
			syncer.Invalidate()
		}
		if err := syncer.Sync(d); err != nil {
			t.Fatalf("seed %d case %d: the kernel refused the table: %v\n%s", seed, c, err, refusedAlone(t, h, in))
		}
		total += len(in.Policies)
		for name, want := range d.Sets {
			got := kernelSet(t, conn, want)
			if !slices.Equal(got, want.Elems) {
				t.Fatalf("seed %d case %d: set %s in the kernel holds\n%v\nwant\n%v", seed, c, name, got, want.Elems)
			}
		}
	}
	t.Logf("%d generated policies in 450 tables, all accepted, every set as rendered", total)
	if total < 2000 {
		t.Fatalf("only %d policies generated, want at least 2,000", total)
	}
}

// refusedAlone names the policies of in that the kernel refuses on their
// own, each in a fresh table.
func refusedAlone(t *testing.T, h netns.NsHandle, in policy.Input) string {
	out := ""
	for _, p := range in.Policies {
		s, err := policy.NewSyncer(h, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		one := in
		one.Policies = []policy.Policy{p}
		if err := s.Sync(policy.Compile(one)); err != nil {
			out += "refused alone: " + policyString(p) + ": " + err.Error() + "\n"
		}
	}
	return out
}

func policyString(p policy.Policy) string {
	b, _ := json.Marshal(p)
	return string(b)
}

func policiesString(ps []policy.Policy) string {
	b, _ := json.Marshal(ps)
	return string(b)
}

// kernelSet reads a set's elements back from the kernel as the compiler's
// elements: concatenated sets as key .. key-end boxes, address sets as
// interval start and end flags.
func kernelSet(t *testing.T, conn *nftables.Conn, s *policy.Set) []policy.Elem {
	t.Helper()
	table := &nftables.Table{Family: nftables.TableFamilyINet, Name: policy.TableName}
	elems, err := conn.GetSetElements(&nftables.Set{Table: table, Name: s.Name})
	if err != nil {
		t.Fatalf("read set %s: %v", s.Name, err)
	}
	var out []policy.Elem
	if s.Kind == policy.DstSet {
		for _, e := range elems {
			lo, plo, tlo := dstKey(e.Key)
			hi, phi, thi := dstKey(e.KeyEnd)
			out = append(out, policy.Elem{AddrLo: lo, AddrHi: hi, ProtoLo: plo, ProtoHi: phi, PortLo: tlo, PortHi: thi})
		}
		slices.SortFunc(out, compareElems)
		return out
	}
	slices.SortFunc(elems, func(a, b nftables.SetElement) int { return addrOf(a.Key).Compare(addrOf(b.Key)) })
	for _, e := range elems {
		a := addrOf(e.Key)
		if e.IntervalEnd {
			if n := len(out); n > 0 {
				out[n-1].AddrHi = a.Prev()
			}
			continue
		}
		out = append(out, policy.Elem{AddrLo: a, AddrHi: top(a)})
	}
	return out
}

func addrOf(b []byte) netip.Addr {
	a, _ := netip.AddrFromSlice(b)
	return a
}

func top(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.MustParseAddr("255.255.255.255")
	}
	return netip.MustParseAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
}

// dstKey decodes address . protocol . port, each field padded to 4 bytes.
func dstKey(k []byte) (netip.Addr, uint8, uint16) {
	n := len(k) - 8
	return addrOf(k[:n]), k[n], binary.BigEndian.Uint16(k[n+4:])
}

func compareElems(a, b policy.Elem) int {
	if c := a.AddrLo.Compare(b.AddrLo); c != 0 {
		return c
	}
	if c := a.AddrHi.Compare(b.AddrHi); c != 0 {
		return c
	}
	for _, c := range []int{int(a.ProtoLo) - int(b.ProtoLo), int(a.ProtoHi) - int(b.ProtoHi), int(a.PortLo) - int(b.PortLo), int(a.PortHi) - int(b.PortHi)} {
		if c != 0 {
			return c
		}
	}
	return 0
}

// TestReportedShapesProgramTheKernel keeps the shapes the kernel refused
// before concatenated sets were made disjoint (EEXIST for the whole table):
// the field report's minimal policy, a pod peer inside an ipBlock of the
// same rule, nested ipBlocks, a port range around a single port, and the
// generator's first failing case (seed 2, case 0).
func TestReportedShapesProgramTheKernel(t *testing.T) {
	netnstest.RequireRoot(t)
	n := netnstest.New(t, "shapes")
	h, err := netns.GetFromName(n.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	a := policy.Selector{MatchLabels: map[string]string{"pod": "a"}}
	block := func(cidrs ...string) []policy.Peer {
		var out []policy.Peer
		for _, c := range cidrs {
			out = append(out, policy.Peer{IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix(c)}})
		}
		return out
	}
	shapes := map[string]policy.Rule{
		"any TCP port next to port 80": {Ports: []policy.Port{{Protocol: policy.TCP}, {Protocol: policy.TCP, Number: 80}}},
		"pod inside an ipBlock (egress)": {Peers: append(block("10.244.1.0/24"), policy.Peer{PodSelector: &policy.Selector{}}),
			Ports: []policy.Port{{Protocol: policy.TCP, Number: 80}}},
		"nested ipBlocks":         {Peers: block("10.244.0.0/16", "10.244.1.0/24", "0.0.0.0/0"), Ports: []policy.Port{{Protocol: policy.TCP, Number: 80}}},
		"range around one port":   {Ports: []policy.Port{{Protocol: policy.TCP, Number: 79, EndPort: 90}, {Protocol: policy.TCP, Number: 85}}},
		"named and numeric alike": {Ports: []policy.Port{{Protocol: policy.TCP, Name: "serve-80-tcp"}, {Protocol: policy.TCP, Number: 80}}},
	}
	base := generatedInputs(2, 1, 8)[0] // the generator's first failing case
	for name, r := range shapes {
		base.Policies = append(base.Policies, policy.Policy{Namespace: "x", Name: name, PodSelector: a, Ingress: true, Egress: true,
			IngressRules: []policy.Rule{r}, EgressRules: []policy.Rule{r}})
	}
	s, err := policy.NewSyncer(h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(policy.Compile(base)); err != nil {
		t.Fatalf("the kernel refused the table: %v\n%s", err, refusedAlone(t, h, base))
	}
}
