// Package policycases holds the NetworkPolicy cases of the upstream
// Kubernetes e2e suite as data: a cluster of three namespaces with three
// pods each, and for each case the policies, a probe and the expected
// reachability. The compiler's table tests and the real-packet tests both
// run them.
package policycases

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/petrelnet/petrel/policy"
)

// The cluster of the upstream NetworkPolicy e2e suite: namespaces x, y, z,
// pods a, b, c in each, every pod serving 80/policy.TCP, 81/policy.UDP and 82/policy.SCTP under
// the names serve-80-tcp, serve-81-udp and serve-82-sctp.
// Cluster is the fixture. Its addresses are the ones Petrel's IPAM hands
// out, in this order, from 10.244.1.0/24 and fd00:10:244:1::/64, so the
// real-packet tests can wire the same pods: x/a .2, x/b .3, x/c .4, y/a .5,
// y/b .6, y/c .7, z/a .8, z/b .9, z/c .10.
func Cluster() policy.Input {
	var in policy.Input
	for n, ns := range []string{"x", "y", "z"} {
		in.Namespaces = append(in.Namespaces, policy.Namespace{Name: ns, Labels: map[string]string{"ns": ns}})
		for i, p := range []string{"a", "b", "c"} {
			in.Pods = append(in.Pods, policy.Pod{Namespace: ns, Name: p, Labels: map[string]string{"pod": p},
				IPs:   []netip.Addr{netip.AddrFrom4([4]byte{10, 244, 1, byte(3*n + i + 2)}), netip.MustParseAddr(fmt.Sprintf("fd00:10:244:1::%x", 3*n+i+2))},
				Ports: []policy.NamedPort{{Name: "serve-80-tcp", Protocol: policy.TCP, Port: 80}, {Name: "serve-81-udp", Protocol: policy.UDP, Port: 81}, {Name: "serve-82-sctp", Protocol: policy.SCTP, Port: 82}}})
		}
	}
	return in
}

// Sel is a matchLabels selector.
func Sel(kv ...string) *policy.Selector {
	s := &policy.Selector{MatchLabels: map[string]string{}}
	for i := 0; i+1 < len(kv); i += 2 {
		s.MatchLabels[kv[i]] = kv[i+1]
	}
	return s
}

// Probe is a protocol and port to try.
type Probe struct {
	Proto policy.Protocol
	Port  uint16
}

var tcp80 = Probe{Proto: policy.TCP, Port: 80}

// Case is one scenario: Allowed says whether a connection from pod "ns/name"
// to pod "ns/name" passes for Probe.
type Case struct {
	Name     string
	Policies []policy.Policy
	Probe    Probe
	Allowed  func(from, to string) bool
}

func ns(p string) string { return strings.Split(p, "/")[0] }

// Cases are the upstream e2e suite's cases.
var Cases = []Case{
	{"no policy: all allowed", nil, tcp80, func(f, to string) bool { return true }},
	{"deny all ingress in x",
		[]policy.Policy{{Namespace: "x", Name: "deny", Ingress: true}}, tcp80,
		func(f, to string) bool { return ns(to) != "x" }},
	{"allow ingress to x/a from namespace y",
		[]policy.Policy{{Namespace: "x", Name: "p", PodSelector: *Sel("pod", "a"), Ingress: true,
			IngressRules: []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: Sel("ns", "y")}}}}}}, tcp80,
		func(f, to string) bool { return to != "x/a" || ns(f) == "y" }},
	{"pod selector AND namespace selector",
		[]policy.Policy{{Namespace: "x", Name: "p", PodSelector: *Sel("pod", "a"), Ingress: true,
			IngressRules: []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: Sel("ns", "y"), PodSelector: Sel("pod", "b")}}}}}}, tcp80,
		func(f, to string) bool { return to != "x/a" || f == "y/b" }},
	{"pod selector alone means the policy's namespace",
		[]policy.Policy{{Namespace: "x", Name: "p", PodSelector: *Sel("pod", "a"), Ingress: true,
			IngressRules: []policy.Rule{{Peers: []policy.Peer{{PodSelector: Sel("pod", "b")}}}}}}, tcp80,
		func(f, to string) bool { return to != "x/a" || f == "x/b" }},
	{"named port allows 80/TCP",
		[]policy.Policy{{Namespace: "x", Name: "p", PodSelector: *Sel("pod", "a"), Ingress: true,
			IngressRules: []policy.Rule{{Ports: []policy.Port{{Protocol: policy.TCP, Name: "serve-80-tcp"}}}}}}, tcp80,
		func(f, to string) bool { return true }},
	{"named port denies 81/UDP",
		[]policy.Policy{{Namespace: "x", Name: "p", PodSelector: *Sel("pod", "a"), Ingress: true,
			IngressRules: []policy.Rule{{Ports: []policy.Port{{Protocol: policy.TCP, Name: "serve-80-tcp"}}}}}}, Probe{Proto: policy.UDP, Port: 81},
		func(f, to string) bool { return to != "x/a" }},
	{"endPort range includes 82/SCTP",
		[]policy.Policy{{Namespace: "x", Name: "p", PodSelector: *Sel("pod", "a"), Ingress: true,
			IngressRules: []policy.Rule{{Ports: []policy.Port{{Protocol: policy.SCTP, Number: 80, EndPort: 82}}}}}}, Probe{Proto: policy.SCTP, Port: 82},
		func(f, to string) bool { return true }},
	{"endPort range excludes 83",
		[]policy.Policy{{Namespace: "x", Name: "p", PodSelector: *Sel("pod", "a"), Ingress: true,
			IngressRules: []policy.Rule{{Ports: []policy.Port{{Protocol: policy.SCTP, Number: 80, EndPort: 82}}}}}}, Probe{Proto: policy.SCTP, Port: 83},
		func(f, to string) bool { return to != "x/a" }},
	{"SCTP only: policy.TCP denied",
		[]policy.Policy{{Namespace: "x", Name: "p", PodSelector: *Sel("pod", "a"), Ingress: true,
			IngressRules: []policy.Rule{{Ports: []policy.Port{{Protocol: policy.SCTP, Number: 82}}}}}}, tcp80,
		func(f, to string) bool { return to != "x/a" }},
	{"ipBlock with except",
		[]policy.Policy{{Namespace: "x", Name: "p", PodSelector: *Sel("pod", "a"), Ingress: true,
			IngressRules: []policy.Rule{
				{Peers: []policy.Peer{{IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix("10.244.1.4/30"), Except: []netip.Prefix{netip.MustParsePrefix("10.244.1.6/32")}}}}},
				{Peers: []policy.Peer{{IPBlock: &policy.IPBlock{CIDR: netip.MustParsePrefix("fd00:10:244:1::4/126"), Except: []netip.Prefix{netip.MustParsePrefix("fd00:10:244:1::6/128")}}}}},
			}}}, tcp80,
		func(f, to string) bool { return to != "x/a" || f == "x/c" || f == "y/a" || f == "y/c" }},
	{"union of two policies",
		[]policy.Policy{
			{Namespace: "x", Name: "p1", PodSelector: *Sel("pod", "a"), Ingress: true, IngressRules: []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: Sel("ns", "y"), PodSelector: Sel("pod", "a")}}}}},
			{Namespace: "x", Name: "p2", PodSelector: *Sel("pod", "a"), Ingress: true, IngressRules: []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: Sel("ns", "z"), PodSelector: Sel("pod", "b")}}}}},
		}, tcp80,
		func(f, to string) bool { return to != "x/a" || f == "y/a" || f == "z/b" }},
	{"deny all egress from x",
		[]policy.Policy{{Namespace: "x", Name: "deny", Egress: true}}, tcp80,
		func(f, to string) bool { return ns(f) != "x" }},
	{"egress to y on a named policy.UDP port",
		[]policy.Policy{{Namespace: "x", Name: "p", PodSelector: *Sel("pod", "a"), Egress: true,
			EgressRules: []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: Sel("ns", "y")}}, Ports: []policy.Port{{Protocol: policy.UDP, Name: "serve-81-udp"}}}}}}, Probe{Proto: policy.UDP, Port: 81},
		func(f, to string) bool { return f != "x/a" || ns(to) == "y" }},
	{"egress named port denies other ports",
		[]policy.Policy{{Namespace: "x", Name: "p", PodSelector: *Sel("pod", "a"), Egress: true,
			EgressRules: []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: Sel("ns", "y")}}, Ports: []policy.Port{{Protocol: policy.UDP, Name: "serve-81-udp"}}}}}}, tcp80,
		func(f, to string) bool { return f != "x/a" }},
	{"egress anywhere on 80/TCP",
		[]policy.Policy{{Namespace: "x", Name: "p", PodSelector: *Sel("pod", "a"), Egress: true,
			EgressRules: []policy.Rule{{Ports: []policy.Port{{Protocol: policy.TCP, Number: 80}}}}}}, tcp80,
		func(f, to string) bool { return true }},
	{"matchExpressions In and DoesNotExist",
		[]policy.Policy{{Namespace: "x", Name: "p", Ingress: true,
			PodSelector:  policy.Selector{MatchExpressions: []policy.Requirement{{Key: "pod", Operator: "In", Values: []string{"a", "b"}}}},
			IngressRules: []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: &policy.Selector{}, PodSelector: &policy.Selector{MatchExpressions: []policy.Requirement{{Key: "pod", Operator: "NotIn", Values: []string{"a", "b"}}}}}}}}}}, tcp80,
		func(f, to string) bool { return !(to == "x/a" || to == "x/b") || strings.HasSuffix(f, "/c") }},
	{"empty rule allows all to the selected pods",
		[]policy.Policy{{Namespace: "x", Name: "p", Ingress: true, IngressRules: []policy.Rule{{}}}}, tcp80,
		func(f, to string) bool { return true }},
}
