package policy

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
)

// The cluster of the upstream NetworkPolicy e2e suite: namespaces x, y, z,
// pods a, b, c in each, every pod serving 80/TCP, 81/UDP and 82/SCTP under
// the names serve-80-tcp, serve-81-udp and serve-82-sctp.
func cluster() Input {
	var in Input
	for n, ns := range []string{"x", "y", "z"} {
		in.Namespaces = append(in.Namespaces, Namespace{Name: ns, Labels: map[string]string{"ns": ns}})
		for i, p := range []string{"a", "b", "c"} {
			in.Pods = append(in.Pods, Pod{Namespace: ns, Name: p, Labels: map[string]string{"pod": p},
				IPs:   []netip.Addr{netip.AddrFrom4([4]byte{10, 0, byte(n + 1), byte(i + 1)}), netip.MustParseAddr(fmt.Sprintf("fd00::%d:%d", n+1, i+1))},
				Ports: []NamedPort{{"serve-80-tcp", TCP, 80}, {"serve-81-udp", UDP, 81}, {"serve-82-sctp", SCTP, 82}}})
		}
	}
	return in
}

func sel(kv ...string) *Selector {
	s := &Selector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

type probe struct {
	proto Protocol
	port  uint16
}

var tcp80 = probe{TCP, 80}

// matrix renders reachability between every pair of pods for one probe,
// over IPv4 and IPv6: "." allowed, "X" denied, "?" the families disagree.
func matrix(d *Desired, in Input, pr probe) string {
	var b strings.Builder
	for _, from := range in.Pods {
		fmt.Fprintf(&b, "%s/%s ", from.Namespace, from.Name)
		for _, to := range in.Pods {
			v4 := d.Allowed(from.IPs[0], to.IPs[0], pr.proto, pr.port)
			v6 := d.Allowed(from.IPs[1], to.IPs[1], pr.proto, pr.port)
			b.WriteString(map[[2]bool]string{{true, true}: ".", {false, false}: "X", {true, false}: "?", {false, true}: "?"}[[2]bool{v4, v6}])
		}
		b.WriteString("\n")
	}
	return b.String()
}

// expect builds the wanted matrix from a predicate.
func expect(in Input, allowed func(from, to string) bool) string {
	var b strings.Builder
	for _, from := range in.Pods {
		fmt.Fprintf(&b, "%s/%s ", from.Namespace, from.Name)
		for _, to := range in.Pods {
			b.WriteString(map[bool]string{true: ".", false: "X"}[allowed(from.Namespace+"/"+from.Name, to.Namespace+"/"+to.Name)])
		}
		b.WriteString("\n")
	}
	return b.String()
}

func ns(p string) string { return strings.Split(p, "/")[0] }

func TestPolicyMatrices(t *testing.T) {
	cases := []struct {
		name     string
		policies []Policy
		probe    probe
		allowed  func(from, to string) bool
	}{
		{"no policy: all allowed", nil, tcp80, func(f, to string) bool { return true }},
		{"deny all ingress in x",
			[]Policy{{Namespace: "x", Name: "deny", Ingress: true}}, tcp80,
			func(f, to string) bool { return ns(to) != "x" }},
		{"allow ingress to x/a from namespace y",
			[]Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), Ingress: true,
				IngressRules: []Rule{{Peers: []Peer{{NamespaceSelector: sel("ns", "y")}}}}}}, tcp80,
			func(f, to string) bool { return to != "x/a" || ns(f) == "y" }},
		{"pod selector AND namespace selector",
			[]Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), Ingress: true,
				IngressRules: []Rule{{Peers: []Peer{{NamespaceSelector: sel("ns", "y"), PodSelector: sel("pod", "b")}}}}}}, tcp80,
			func(f, to string) bool { return to != "x/a" || f == "y/b" }},
		{"pod selector alone means the policy's namespace",
			[]Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), Ingress: true,
				IngressRules: []Rule{{Peers: []Peer{{PodSelector: sel("pod", "b")}}}}}}, tcp80,
			func(f, to string) bool { return to != "x/a" || f == "x/b" }},
		{"named port allows 80/TCP",
			[]Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), Ingress: true,
				IngressRules: []Rule{{Ports: []Port{{Protocol: TCP, Name: "serve-80-tcp"}}}}}}, tcp80,
			func(f, to string) bool { return true }},
		{"named port denies 81/UDP",
			[]Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), Ingress: true,
				IngressRules: []Rule{{Ports: []Port{{Protocol: TCP, Name: "serve-80-tcp"}}}}}}, probe{UDP, 81},
			func(f, to string) bool { return to != "x/a" }},
		{"endPort range includes 82/SCTP",
			[]Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), Ingress: true,
				IngressRules: []Rule{{Ports: []Port{{Protocol: SCTP, Number: 80, EndPort: 82}}}}}}, probe{SCTP, 82},
			func(f, to string) bool { return true }},
		{"endPort range excludes 83",
			[]Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), Ingress: true,
				IngressRules: []Rule{{Ports: []Port{{Protocol: SCTP, Number: 80, EndPort: 82}}}}}}, probe{SCTP, 83},
			func(f, to string) bool { return to != "x/a" }},
		{"SCTP only: TCP denied",
			[]Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), Ingress: true,
				IngressRules: []Rule{{Ports: []Port{{Protocol: SCTP, Number: 82}}}}}}, tcp80,
			func(f, to string) bool { return to != "x/a" }},
		{"ipBlock with except",
			[]Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), Ingress: true,
				IngressRules: []Rule{
					{Peers: []Peer{{IPBlock: &IPBlock{CIDR: netip.MustParsePrefix("10.0.2.0/24"), Except: []netip.Prefix{netip.MustParsePrefix("10.0.2.2/32")}}}}},
					{Peers: []Peer{{IPBlock: &IPBlock{CIDR: netip.MustParsePrefix("fd00::2:0/112"), Except: []netip.Prefix{netip.MustParsePrefix("fd00::2:2/128")}}}}},
				}}}, tcp80,
			func(f, to string) bool { return to != "x/a" || f == "y/a" || f == "y/c" }},
		{"union of two policies",
			[]Policy{
				{Namespace: "x", Name: "p1", PodSelector: *sel("pod", "a"), Ingress: true, IngressRules: []Rule{{Peers: []Peer{{NamespaceSelector: sel("ns", "y"), PodSelector: sel("pod", "a")}}}}},
				{Namespace: "x", Name: "p2", PodSelector: *sel("pod", "a"), Ingress: true, IngressRules: []Rule{{Peers: []Peer{{NamespaceSelector: sel("ns", "z"), PodSelector: sel("pod", "b")}}}}},
			}, tcp80,
			func(f, to string) bool { return to != "x/a" || f == "y/a" || f == "z/b" }},
		{"deny all egress from x",
			[]Policy{{Namespace: "x", Name: "deny", Egress: true}}, tcp80,
			func(f, to string) bool { return ns(f) != "x" }},
		{"egress to y on a named UDP port",
			[]Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), Egress: true,
				EgressRules: []Rule{{Peers: []Peer{{NamespaceSelector: sel("ns", "y")}}, Ports: []Port{{Protocol: UDP, Name: "serve-81-udp"}}}}}}, probe{UDP, 81},
			func(f, to string) bool { return f != "x/a" || ns(to) == "y" }},
		{"egress named port denies other ports",
			[]Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), Egress: true,
				EgressRules: []Rule{{Peers: []Peer{{NamespaceSelector: sel("ns", "y")}}, Ports: []Port{{Protocol: UDP, Name: "serve-81-udp"}}}}}}, tcp80,
			func(f, to string) bool { return f != "x/a" }},
		{"egress anywhere on 80/TCP",
			[]Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), Egress: true,
				EgressRules: []Rule{{Ports: []Port{{Protocol: TCP, Number: 80}}}}}}, tcp80,
			func(f, to string) bool { return true }},
		{"matchExpressions In and DoesNotExist",
			[]Policy{{Namespace: "x", Name: "p", Ingress: true,
				PodSelector:  Selector{MatchExpressions: []Requirement{{Key: "pod", Operator: "In", Values: []string{"a", "b"}}}},
				IngressRules: []Rule{{Peers: []Peer{{NamespaceSelector: &Selector{}, PodSelector: &Selector{MatchExpressions: []Requirement{{Key: "pod", Operator: "NotIn", Values: []string{"a", "b"}}}}}}}}}}, tcp80,
			func(f, to string) bool { return !(to == "x/a" || to == "x/b") || strings.HasSuffix(f, "/c") }},
		{"empty rule allows all to the selected pods",
			[]Policy{{Namespace: "x", Name: "p", Ingress: true, IngressRules: []Rule{{}}}}, tcp80,
			func(f, to string) bool { return true }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := cluster()
			in.Policies = c.policies
			got := matrix(Compile(in), in, c.probe)
			if want := expect(in, c.allowed); got != want {
				t.Fatalf("reachability (rows from, columns to: x/a x/b x/c y/a ...)\n got:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

func TestPendingPodsAreIsolatedOnlyWhereAPolicyCouldSelectThem(t *testing.T) {
	in := cluster()
	in.Policies = []Policy{{Namespace: "x", Name: "allow-all", Ingress: true, IngressRules: []Rule{{}}}}
	newX := Pod{Namespace: "x", IPs: []netip.Addr{netip.MustParseAddr("10.0.1.9")}}
	newY := Pod{Namespace: "y", IPs: []netip.Addr{netip.MustParseAddr("10.0.2.9")}}
	in.Pending = []Pod{newX, newY}
	d := Compile(in)
	ya := in.Pods[3].IPs[0]
	if d.Allowed(ya, newX.IPs[0], TCP, 80) || d.Allowed(newX.IPs[0], ya, TCP, 80) {
		t.Fatal("an unclassified pod in a namespace with policies passed traffic")
	}
	if !d.Allowed(ya, newY.IPs[0], TCP, 80) || !d.Allowed(newY.IPs[0], ya, TCP, 80) {
		t.Fatal("an unclassified pod in a namespace without policies was isolated")
	}
}

func TestCompileIsDeterministic(t *testing.T) {
	in := cluster()
	in.Policies = []Policy{
		{Namespace: "x", Name: "b", PodSelector: *sel("pod", "a"), Ingress: true, IngressRules: []Rule{{Peers: []Peer{{NamespaceSelector: sel("ns", "y")}}}}},
		{Namespace: "x", Name: "a", Egress: true},
	}
	a := fmt.Sprint(Compile(in).Ingress, Compile(in).Egress)
	in.Policies[0], in.Policies[1] = in.Policies[1], in.Policies[0]
	if b := fmt.Sprint(Compile(in).Ingress, Compile(in).Egress); a != b {
		t.Fatalf("policy order changed the output:\n%s\n%s", a, b)
	}
}

func TestBlockRanges(t *testing.T) {
	got := fmt.Sprint(blockRanges(IPBlock{CIDR: netip.MustParsePrefix("10.0.0.0/24"),
		Except: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/30"), netip.MustParsePrefix("10.0.0.128/25")}}))
	if got != "[10.0.0.4-10.0.0.127]" {
		t.Fatalf("got %s", got)
	}
}

// The caching Compiler must give exactly what Compile gives, through a
// sequence of pod, label, namespace and policy changes.
func TestCompilerCacheMatchesCompile(t *testing.T) {
	in := cluster()
	in.Policies = []Policy{
		{Namespace: "x", Name: "p1", PodSelector: *sel("pod", "a"), Ingress: true, IngressRules: []Rule{{Peers: []Peer{{NamespaceSelector: sel("ns", "y")}}, Ports: []Port{{Protocol: TCP, Name: "serve-80-tcp"}}}}},
		{Namespace: "y", Name: "p2", Egress: true, EgressRules: []Rule{{Ports: []Port{{Protocol: UDP, Name: "serve-81-udp"}}}}},
		{Namespace: "z", Name: "p3", Ingress: true},
	}
	k := NewCompiler()
	steps := []func(){
		func() {},
		func() { in.Pods[3].Labels = map[string]string{"pod": "zz"} }, // relabel in y
		func() {
			in.Pods = append(in.Pods, Pod{Namespace: "y", Name: "n", IPs: []netip.Addr{netip.MustParseAddr("10.0.2.9")}})
		},
		func() { in.Namespaces[2].Labels = map[string]string{"ns": "y"} }, // z now matches ns=y
		func() { in.Policies[0].IngressRules[0].Ports = nil },             // policy change
		func() { in.Policies = in.Policies[1:] },                          // policy deleted
		func() { in.Pods[0].Ports = nil },                                 // named ports gone
	}
	for i, step := range steps {
		step()
		want := fmt.Sprint(render(Compile(in)))
		if got := fmt.Sprint(render(k.Compile(in))); got != want {
			t.Fatalf("step %d: cached compile differs:\n%s\nwant\n%s", i, got, want)
		}
	}
}

func render(d *Desired) string {
	var b strings.Builder
	for _, n := range sortedNames(d.Sets) {
		fmt.Fprintf(&b, "%s %v\n", n, d.Sets[n].Elems)
	}
	fmt.Fprintln(&b, d.Egress, d.Ingress)
	return b.String()
}
