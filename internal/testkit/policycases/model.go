package policycases

import (
	"net/netip"

	"github.com/petrelnet/petrel/policy"
)

// Allowed is a model of NetworkPolicy semantics written straight from the
// API's documentation, independent of Petrel's compiler: it reads the
// policies themselves, not compiled sets. It says whether the first packet
// of a connection from src to dst passes, for pods in `in` and addresses
// outside the cluster.
//
// Named ports resolve on the destination pod: for ingress the selected
// pod, for egress the pod at the destination address. An egress peer given
// as an ipBlock matches numeric ports only (the block is addresses, not
// pods), which is Petrel's documented reading of that combination.
func Allowed(in policy.Input, src, dst netip.Addr, proto policy.Protocol, port uint16) bool {
	srcPod, dstPod := podAt(in, src), podAt(in, dst)
	return egressAllows(in, srcPod, dst, dstPod, proto, port) && ingressAllows(in, src, srcPod, dstPod, proto, port)
}

func podAt(in policy.Input, a netip.Addr) *policy.Pod {
	for i, p := range in.Pods {
		for _, ip := range p.IPs {
			if ip == a {
				return &in.Pods[i]
			}
		}
	}
	return nil
}

func selects(p policy.Policy, pod *policy.Pod) bool {
	return pod != nil && pod.Namespace == p.Namespace && p.PodSelector.Matches(pod.Labels)
}

func egressAllows(in policy.Input, srcPod *policy.Pod, dst netip.Addr, dstPod *policy.Pod, proto policy.Protocol, port uint16) bool {
	isolated := false
	for _, p := range in.Policies {
		if !p.Egress || !selects(p, srcPod) {
			continue
		}
		isolated = true
		for _, r := range p.EgressRules {
			if ruleAllows(in, p.Namespace, r, dst, dstPod, dstPod, proto, port, true) {
				return true
			}
		}
	}
	return !isolated
}

func ingressAllows(in policy.Input, src netip.Addr, srcPod, dstPod *policy.Pod, proto policy.Protocol, port uint16) bool {
	isolated := false
	for _, p := range in.Policies {
		if !p.Ingress || !selects(p, dstPod) {
			continue
		}
		isolated = true
		for _, r := range p.IngressRules {
			if ruleAllows(in, p.Namespace, r, src, srcPod, dstPod, proto, port, false) {
				return true
			}
		}
	}
	return !isolated
}

// ruleAllows: some peer matches the remote end (addr, or the pod there),
// and some port matches the destination (dstPod resolves names).
func ruleAllows(in policy.Input, ns string, r policy.Rule, addr netip.Addr, remote, dstPod *policy.Pod, proto policy.Protocol, port uint16, egress bool) bool {
	if len(r.Peers) == 0 {
		return portsAllow(r.Ports, dstPod, proto, port)
	}
	for _, peer := range r.Peers {
		if peer.IPBlock != nil {
			ports, resolve := r.Ports, dstPod
			if egress {
				ports, resolve = numericOnly(r.Ports), nil
			}
			if inBlock(*peer.IPBlock, addr) && portsAllow(ports, resolve, proto, port) {
				return true
			}
			continue
		}
		if peerSelects(in, ns, peer, remote) && portsAllow(r.Ports, dstPod, proto, port) {
			return true
		}
	}
	return false
}

// numericOnly keeps the numeric and protocol-only ports; a rule whose
// ports are all named keeps none, and then matches nothing.
func numericOnly(ps []policy.Port) []policy.Port {
	if len(ps) == 0 {
		return nil
	}
	out := []policy.Port{}
	for _, p := range ps {
		if p.Name == "" {
			out = append(out, p)
		}
	}
	if len(out) == 0 {
		return []policy.Port{{Name: "\x00none"}} // matches no port
	}
	return out
}

func peerSelects(in policy.Input, ns string, peer policy.Peer, pod *policy.Pod) bool {
	if pod == nil {
		return false
	}
	if peer.NamespaceSelector == nil {
		if pod.Namespace != ns {
			return false
		}
	} else {
		var labels map[string]string
		for _, n := range in.Namespaces {
			if n.Name == pod.Namespace {
				labels = n.Labels
			}
		}
		if !peer.NamespaceSelector.Matches(labels) {
			return false
		}
	}
	return peer.PodSelector == nil || peer.PodSelector.Matches(pod.Labels)
}

func inBlock(b policy.IPBlock, a netip.Addr) bool {
	if !b.CIDR.Contains(a) {
		return false
	}
	for _, e := range b.Except {
		if e.Contains(a) {
			return false
		}
	}
	return true
}

func portsAllow(ps []policy.Port, dstPod *policy.Pod, proto policy.Protocol, port uint16) bool {
	if len(ps) == 0 {
		return true
	}
	for _, p := range ps {
		if p.Protocol != proto {
			continue
		}
		switch {
		case p.Name != "":
			if dstPod == nil {
				continue
			}
			for _, np := range dstPod.Ports {
				if np.Name == p.Name && np.Protocol == proto && np.Port == port {
					return true
				}
			}
		case p.Number == 0:
			return true
		case port >= p.Number && port <= max(p.EndPort, p.Number):
			return true
		}
	}
	return false
}
