package kube

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Service announcements: which Service addresses this node announces, and
// the scope every node's guard accepts them in. A LoadBalancer or external
// IP with externalTrafficPolicy Local is announced only by nodes with a
// ready local endpoint (its EndpointSlices say which); with Cluster, by
// every selected node. Every node computes the same scope from the same
// objects: the valid pools, the Services' external IPs (when announced)
// and the service CIDRs (when announced).

// serviceView is this node's part in the Service announcements.
type serviceView struct {
	scope []netip.Prefix
	mine  []netip.Prefix
}

func (k *kubeSource) serviceView(me *corev1.Node, adv ServiceAdvertisement) serviceView {
	var v serviceView
	lb := adv.LoadBalancerIPs == nil || *adv.LoadBalancerIPs
	pools, _ := k.pools()
	if lb {
		for _, p := range pools {
			v.scope = append(v.scope, p.cidrs...)
		}
	}
	var cidrs []netip.Prefix
	if adv.ClusterIPs {
		for _, c := range adv.ServiceCIDRs {
			if p, err := netip.ParsePrefix(c); err == nil {
				cidrs = append(cidrs, p)
			}
		}
		v.scope = append(v.scope, cidrs...)
	}
	selected := true
	if adv.NodeSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(adv.NodeSelector)
		selected = err == nil && sel.Matches(labels.Set(me.Labels))
	}
	svcs, _ := k.services.List(labels.Everything())
	for _, s := range svcs {
		var addrs []netip.Addr
		if lb && served(s) {
			for _, a := range held(s) {
				if inPools(pools, a) {
					addrs = append(addrs, a)
				}
			}
		}
		if adv.ExternalIPs {
			for _, e := range s.Spec.ExternalIPs {
				if a, err := netip.ParseAddr(e); err == nil {
					a = a.Unmap()
					v.scope = append(v.scope, netip.PrefixFrom(a, a.BitLen()))
					addrs = append(addrs, a)
				}
			}
		}
		if !selected || len(addrs) == 0 {
			continue
		}
		if s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal && !k.readyHere(s, me.Name) {
			continue
		}
		for _, a := range addrs {
			v.mine = append(v.mine, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	if selected {
		v.mine = append(v.mine, cidrs...)
	}
	for _, ps := range []*[]netip.Prefix{&v.scope, &v.mine} {
		slices.SortFunc(*ps, comparePrefixes)
		*ps = slices.Compact(*ps)
	}
	return v
}

func comparePrefixes(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func inPools(pools []lbPool, a netip.Addr) bool {
	for _, p := range pools {
		for _, c := range p.cidrs {
			if usable(c, a) {
				return true
			}
		}
	}
	return false
}

// readyHere reports whether the Service has a ready endpoint on this node
// that is not terminating.
func (k *kubeSource) readyHere(s *corev1.Service, node string) bool {
	sel := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: s.Name})
	eps, err := k.slices.EndpointSlices(s.Namespace).List(sel)
	if err != nil {
		return false
	}
	for _, es := range eps {
		for _, e := range es.Endpoints {
			c := e.Conditions
			if e.NodeName != nil && *e.NodeName == node && (c.Ready == nil || *c.Ready) && (c.Terminating == nil || !*c.Terminating) {
				return true
			}
		}
	}
	return false
}
