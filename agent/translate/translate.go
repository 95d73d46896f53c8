// Package translate turns Kubernetes API objects (from the API server or
// from YAML files) into the policy package's small value types, once;
// nothing past it sees an API type. It imports k8s.io/api, never client-go.
package translate

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/petrelnet/petrel/policy"
)

// Namespace is a namespace's name and labels.
func Namespace(ns *corev1.Namespace) policy.Namespace {
	return policy.Namespace{Name: ns.Name, Labels: ns.Labels}
}

// Pod is a pod's labels, addresses and named container ports.
func Pod(p *corev1.Pod) policy.Pod {
	out := policy.Pod{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels}
	for _, ip := range p.Status.PodIPs {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			out.IPs = append(out.IPs, a)
		}
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name != "" {
				out.Ports = append(out.Ports, policy.NamedPort{Name: cp.Name, Protocol: protocol(cp.Protocol), Port: uint16(cp.ContainerPort)})
			}
		}
	}
	return out
}

func protocol(p corev1.Protocol) policy.Protocol {
	switch p {
	case corev1.ProtocolUDP:
		return policy.UDP
	case corev1.ProtocolSCTP:
		return policy.SCTP
	}
	return policy.TCP
}

// NetworkPolicy applies Kubernetes' defaults: without policyTypes a
// policy isolates ingress, and egress too if it has egress rules.
func NetworkPolicy(np *netv1.NetworkPolicy) (policy.Policy, error) {
	out := policy.Policy{Namespace: np.Namespace, Name: np.Name}
	var err error
	if out.PodSelector, err = selector(&np.Spec.PodSelector); err != nil {
		return out, fmt.Errorf("spec.podSelector: %w", err)
	}
	types := np.Spec.PolicyTypes
	if len(types) == 0 {
		types = []netv1.PolicyType{netv1.PolicyTypeIngress}
		if len(np.Spec.Egress) > 0 {
			types = append(types, netv1.PolicyTypeEgress)
		}
	}
	out.Ingress = slices.Contains(types, netv1.PolicyTypeIngress)
	out.Egress = slices.Contains(types, netv1.PolicyTypeEgress)
	for i, r := range np.Spec.Ingress {
		rule, err := fromRule(r.From, r.Ports)
		if err != nil {
			return out, fmt.Errorf("spec.ingress[%d]: %w", i, err)
		}
		out.IngressRules = append(out.IngressRules, rule)
	}
	for i, r := range np.Spec.Egress {
		rule, err := fromRule(r.To, r.Ports)
		if err != nil {
			return out, fmt.Errorf("spec.egress[%d]: %w", i, err)
		}
		out.EgressRules = append(out.EgressRules, rule)
	}
	return out, nil
}

func fromRule(peers []netv1.NetworkPolicyPeer, ports []netv1.NetworkPolicyPort) (policy.Rule, error) {
	var r policy.Rule
	for i, p := range peers {
		var out policy.Peer
		var err error
		if p.PodSelector != nil {
			s, e := selector(p.PodSelector)
			out.PodSelector, err = &s, e
		}
		if err == nil && p.NamespaceSelector != nil {
			s, e := selector(p.NamespaceSelector)
			out.NamespaceSelector, err = &s, e
		}
		if err == nil && p.IPBlock != nil {
			out.IPBlock, err = ipBlock(p.IPBlock)
		}
		if err != nil {
			return r, fmt.Errorf("peers[%d]: %w", i, err)
		}
		r.Peers = append(r.Peers, out)
	}
	for i, p := range ports {
		out := policy.Port{Protocol: policy.TCP}
		if p.Protocol != nil {
			out.Protocol = protocol(*p.Protocol)
		}
		if p.Port != nil {
			if p.Port.Type == intstr.String {
				out.Name = p.Port.StrVal
			} else if v := p.Port.IntVal; v < 1 || v > 65535 {
				return r, fmt.Errorf("ports[%d].port: %d out of range", i, v)
			} else {
				out.Number = uint16(v)
			}
		}
		if p.EndPort != nil {
			if out.Number == 0 || *p.EndPort < int32(out.Number) || *p.EndPort > 65535 {
				return r, fmt.Errorf("ports[%d].endPort: %d needs a numeric port not above it", i, *p.EndPort)
			}
			out.EndPort = uint16(*p.EndPort)
		}
		r.Ports = append(r.Ports, out)
	}
	return r, nil
}

func selector(s *metav1.LabelSelector) (policy.Selector, error) {
	out := policy.Selector{MatchLabels: s.MatchLabels}
	for _, e := range s.MatchExpressions {
		op := string(e.Operator)
		if !slices.Contains([]string{"In", "NotIn", "Exists", "DoesNotExist"}, op) {
			return out, fmt.Errorf("matchExpressions: unknown operator %q", op)
		}
		out.MatchExpressions = append(out.MatchExpressions, policy.Requirement{Key: e.Key, Operator: op, Values: e.Values})
	}
	return out, nil
}

func ipBlock(b *netv1.IPBlock) (*policy.IPBlock, error) {
	cidr, err := netip.ParsePrefix(strings.TrimSpace(b.CIDR))
	if err != nil {
		return nil, fmt.Errorf("ipBlock.cidr: %w", err)
	}
	out := &policy.IPBlock{CIDR: cidr.Masked()}
	for i, e := range b.Except {
		p, err := netip.ParsePrefix(e)
		if err != nil || !cidr.Contains(p.Addr()) || p.Bits() < cidr.Bits() {
			return nil, fmt.Errorf("ipBlock.except[%d]: %q is not a CIDR inside %s", i, e, cidr)
		}
		out.Except = append(out.Except, p.Masked())
	}
	return out, nil
}
