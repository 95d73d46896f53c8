// Package policy is all of Petrel's nftables: masquerade for traffic leaving
// the cluster and Kubernetes NetworkPolicy. A pure compiler turns Petrel's
// own value types into a small description of sets and rules; a syncer
// renders it into Petrel's own table in one atomic transaction. It is the
// only package that imports google/nftables.
package policy

import (
	"net/netip"
	"slices"
)

// Namespace is a Kubernetes namespace, as far as policy cares.
type Namespace struct {
	Name   string
	Labels map[string]string
}

// Pod is a pod with its addresses and its containers' named ports.
type Pod struct {
	Namespace, Name string
	Labels          map[string]string
	IPs             []netip.Addr
	Ports           []NamedPort
}

// NamedPort is a container port a NetworkPolicy may name.
type NamedPort struct {
	Name     string
	Protocol Protocol
	Port     uint16
}

// Protocol is an IP protocol number (TCP, UDP or SCTP).
type Protocol uint8

const (
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

// Policy is a networking.k8s.io/v1 NetworkPolicy.
type Policy struct {
	Namespace, Name string
	PodSelector     Selector
	// Ingress and Egress say which directions the policy isolates, after
	// applying Kubernetes' implicit policyTypes (see Types).
	Ingress, Egress           bool
	IngressRules, EgressRules []Rule
}

// Rule is one ingress or egress rule: traffic is allowed from/to any peer
// (all when Peers is empty) on any of the ports (all when Ports is empty).
type Rule struct {
	Peers []Peer
	Ports []Port
}

// Peer is a NetworkPolicyPeer: pods (by selectors) or an IP block.
type Peer struct {
	PodSelector       *Selector
	NamespaceSelector *Selector
	IPBlock           *IPBlock
}

// IPBlock is a CIDR minus exceptions.
type IPBlock struct {
	CIDR   netip.Prefix
	Except []netip.Prefix
}

// Port is a NetworkPolicyPort. Exactly one of Number and Name is set, or
// neither (all ports of Protocol). EndPort makes Number..EndPort a range.
type Port struct {
	Protocol Protocol
	Number   uint16
	Name     string
	EndPort  uint16
}

// Selector is a LabelSelector. The zero Selector selects everything.
type Selector struct {
	MatchLabels      map[string]string
	MatchExpressions []Requirement
}

// Requirement is one matchExpressions entry.
type Requirement struct {
	Key      string
	Operator string // In, NotIn, Exists, DoesNotExist
	Values   []string
}

// Matches reports whether labels satisfy every term of the selector.
func (s Selector) Matches(labels map[string]string) bool {
	for k, v := range s.MatchLabels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	for _, r := range s.MatchExpressions {
		v, ok := labels[r.Key]
		switch r.Operator {
		case "In":
			if !ok || !slices.Contains(r.Values, v) {
				return false
			}
		case "NotIn":
			if ok && slices.Contains(r.Values, v) {
				return false
			}
		case "Exists":
			if !ok {
				return false
			}
		case "DoesNotExist":
			if ok {
				return false
			}
		default:
			return false // an unknown operator selects nothing: fail closed
		}
	}
	return true
}
