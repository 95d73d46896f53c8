package policycases

import (
	"fmt"
	"math/rand/v2"
	"net/netip"

	"github.com/petrelnet/petrel/policy"
)

// Generate makes a random NetworkPolicy in one of the Cluster's namespaces,
// with shapes chosen to overlap on purpose: any port next to specific
// ports, port ranges around single ports, named ports resolving to a number
// also named numerically, pods inside ipBlocks of the same rule, nested and
// overlapping ipBlocks with except holes, absent protocols. name makes it
// unique.
func Generate(r *rand.Rand, name string) policy.Policy {
	namespaces := []string{"x", "y", "z"}
	p := policy.Policy{Namespace: namespaces[r.IntN(3)], Name: name, PodSelector: *selector(r, "pod", "a", "b", "c")}
	p.Ingress, p.Egress = r.IntN(4) != 0, r.IntN(3) == 0
	if !p.Ingress && !p.Egress {
		p.Ingress = true
	}
	for range r.IntN(4) {
		p.IngressRules = append(p.IngressRules, rule(r))
	}
	for range r.IntN(3) {
		p.EgressRules = append(p.EgressRules, rule(r))
	}
	return p
}

func rule(r *rand.Rand) policy.Rule {
	var out policy.Rule
	for range r.IntN(4) {
		out.Peers = append(out.Peers, peer(r))
	}
	if r.IntN(4) != 0 {
		for range 1 + r.IntN(4) {
			out.Ports = append(out.Ports, port(r))
		}
	}
	return out
}

func peer(r *rand.Rand) policy.Peer {
	switch r.IntN(5) {
	case 0, 1:
		return policy.Peer{IPBlock: ipBlock(r)}
	case 2:
		return policy.Peer{PodSelector: selector(r, "pod", "a", "b", "c")}
	case 3:
		return policy.Peer{NamespaceSelector: selector(r, "ns", "x", "y", "z")}
	}
	return policy.Peer{NamespaceSelector: selector(r, "ns", "x", "y", "z"), PodSelector: selector(r, "pod", "a", "b", "c")}
}

// selector is empty, a matchLabels term, or a matchExpressions term.
func selector(r *rand.Rand, key string, values ...string) *policy.Selector {
	v := values[r.IntN(len(values))]
	switch r.IntN(5) {
	case 0:
		return &policy.Selector{}
	case 1, 2:
		return Sel(key, v)
	case 3:
		return &policy.Selector{MatchExpressions: []policy.Requirement{{Key: key, Operator: "In", Values: []string{v, values[r.IntN(len(values))]}}}}
	}
	ops := []string{"NotIn", "Exists", "DoesNotExist"}
	op := ops[r.IntN(3)]
	req := policy.Requirement{Key: key, Operator: op}
	if op == "NotIn" {
		req.Values = []string{v}
	}
	return &policy.Selector{MatchExpressions: []policy.Requirement{req}}
}

// Blocks around the Cluster's addresses (10.244.1.2-10 and
// fd00:10:244:1::2-a) and beyond: nested, overlapping, the whole family.
var blocks = []string{
	"10.244.1.0/24", "10.244.1.0/28", "10.244.1.4/30", "10.244.1.5/32", "10.244.0.0/16", "0.0.0.0/0", "192.0.2.0/24", "10.244.1.8/29",
	"fd00:10:244:1::/64", "fd00:10:244:1::/124", "fd00:10:244:1::4/126", "fd00:10:244:1::5/128", "fd00:10:244::/48", "::/0", "2001:db8::/32",
}

func ipBlock(r *rand.Rand) *policy.IPBlock {
	cidr := netip.MustParsePrefix(blocks[r.IntN(len(blocks))])
	b := &policy.IPBlock{CIDR: cidr}
	for range r.IntN(3) {
		// An except inside the block: a random address of the Cluster's
		// range, widened, kept if the block contains it.
		a := netip.AddrFrom4([4]byte{10, 244, 1, byte(r.IntN(12))})
		if cidr.Addr().Is6() {
			a = netip.MustParseAddr(fmt.Sprintf("fd00:10:244:1::%x", r.IntN(12)))
		}
		bits := a.BitLen() - r.IntN(3)
		e := netip.PrefixFrom(a, bits).Masked()
		if cidr.Contains(e.Addr()) && e.Bits() > cidr.Bits() {
			b.Except = append(b.Except, e)
		}
	}
	return b
}

func port(r *rand.Rand) policy.Port {
	protos := []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP}
	p := policy.Port{Protocol: protos[r.IntN(3)]}
	switch r.IntN(6) {
	case 0: // the protocol alone: every port
	case 1:
		p.Number = []uint16{80, 81, 82, 85}[r.IntN(4)]
	case 2:
		p.Number = []uint16{79, 80, 84}[r.IntN(3)]
		p.EndPort = p.Number + uint16(r.IntN(10))
	case 3, 4:
		p.Name = []string{"serve-80-tcp", "serve-81-udp", "serve-82-sctp", "http", "web"}[r.IntN(5)]
	default:
		p.Number = 80
	}
	return p
}

// GeneratedCluster is Cluster with extra named ports that resolve to the
// numbers the generator also names numerically, two names for one number on
// some pods.
func GeneratedCluster() policy.Input {
	in := Cluster()
	for i := range in.Pods {
		p := &in.Pods[i]
		p.Ports = append(p.Ports, policy.NamedPort{Name: "http", Protocol: policy.TCP, Port: 80})
		if i%2 == 0 {
			p.Ports = append(p.Ports, policy.NamedPort{Name: "web", Protocol: policy.TCP, Port: uint16(80 + i%3)})
		}
	}
	return in
}
