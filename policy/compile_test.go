package policy_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/policycases"
	. "github.com/petrelnet/petrel/policy"
)

var (
	cluster = policycases.Cluster
	sel     = policycases.Sel
)

type probe = policycases.Probe

var tcp80 = probe{Proto: TCP, Port: 80}

// matrix renders reachability between every pair of pods for one probe,
// over IPv4 and IPv6: "." allowed, "X" denied, "?" the families disagree.
func matrix(d *Desired, in Input, pr probe) string {
	var b strings.Builder
	for _, from := range in.Pods {
		fmt.Fprintf(&b, "%s/%s ", from.Namespace, from.Name)
		for _, to := range in.Pods {
			v4 := d.Allowed(from.IPs[0], to.IPs[0], pr.Proto, pr.Port)
			v6 := d.Allowed(from.IPs[1], to.IPs[1], pr.Proto, pr.Port)
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
	for _, c := range policycases.Cases {
		t.Run(c.Name, func(t *testing.T) {
			in := cluster()
			in.Policies = c.Policies
			got := matrix(Compile(in), in, c.Probe)
			if want := expect(in, c.Allowed); got != want {
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
		func() { // policy change, as a new value
			in.Policies = slices.Clone(in.Policies)
			in.Policies[0].IngressRules = []Rule{{Peers: in.Policies[0].IngressRules[0].Peers}}
		},
		func() { in.Policies = in.Policies[1:] }, // policy deleted
		func() { in.Pods[0].Ports = nil },        // named ports gone
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
	var names []string
	for n := range d.Sets {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(&b, "%s %v\n", n, d.Sets[n].Elems)
	}
	fmt.Fprintln(&b, d.Egress, d.Ingress)
	return b.String()
}

// A named port cannot be resolved for an IP block: such a rule admits
// nothing there, while the same rule with a number admits the port.
func TestIPBlockWithNamedPortMatchesNothing(t *testing.T) {
	in := cluster()
	all := &IPBlock{CIDR: netip.MustParsePrefix("0.0.0.0/0")}
	in.Policies = []Policy{{Namespace: "x", Name: "p", PodSelector: *sel("pod", "a"), Egress: true,
		EgressRules: []Rule{{Peers: []Peer{{IPBlock: all}}, Ports: []Port{{Protocol: TCP, Name: "serve-80-tcp"}}}}}}
	xa, ya := in.Pods[0].IPs[0], in.Pods[3].IPs[0]
	if Compile(in).Allowed(xa, ya, TCP, 80) {
		t.Fatal("a named port matched through an IP block")
	}
	in.Policies[0].EgressRules[0].Ports = []Port{{Protocol: TCP, Number: 80}}
	if !Compile(in).Allowed(xa, ya, TCP, 80) {
		t.Fatal("a numeric port through an IP block did not match")
	}
}
