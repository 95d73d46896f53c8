package main

import (
	"fmt"
	"net/netip"
	"time"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/petrelnet/petrel/agent/translate"
	"github.com/petrelnet/petrel/policy"
)

// objects is the synthetic cluster as Kubernetes API objects, for the path
// Kubernetes mode takes: at every sync every object is translated afresh
// (new selectors, new slices) and handed to the compiler.
type objects struct {
	cache      *translate.Cache // as the Kubernetes source keeps one
	namespaces []*corev1.Namespace
	pods       []*corev1.Pod
	policies   []*netv1.NetworkPolicy
}

func toObjects(in policy.Input) *objects {
	o := &objects{cache: translate.NewCache()}
	for _, ns := range in.Namespaces {
		o.namespaces = append(o.namespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns.Name, Labels: ns.Labels}})
	}
	for _, p := range in.Pods {
		o.pods = append(o.pods, podObject(p))
	}
	for _, p := range in.Policies {
		r := p.IngressRules[0]
		peer := r.Peers[0]
		np := &netv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name},
			Spec: netv1.NetworkPolicySpec{
				PodSelector: metav1.LabelSelector{MatchLabels: p.PodSelector.MatchLabels},
				PolicyTypes: []netv1.PolicyType{netv1.PolicyTypeIngress},
				Ingress: []netv1.NetworkPolicyIngressRule{{
					From: []netv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{MatchLabels: peer.NamespaceSelector.MatchLabels},
						PodSelector: &metav1.LabelSelector{MatchLabels: peer.PodSelector.MatchLabels}}},
				}},
			}}
		for _, pt := range r.Ports {
			port := intstr.FromInt32(int32(pt.Number))
			if pt.Name != "" {
				port = intstr.FromString(pt.Name)
			}
			proto := corev1.ProtocolTCP
			np.Spec.Ingress[0].Ports = append(np.Spec.Ingress[0].Ports, netv1.NetworkPolicyPort{Protocol: &proto, Port: &port})
		}
		o.policies = append(o.policies, np)
	}
	return o
}

func podObject(p policy.Pod) *corev1.Pod {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name, Labels: p.Labels}}
	for _, ip := range p.IPs {
		pod.Status.PodIPs = append(pod.Status.PodIPs, corev1.PodIP{IP: ip.String()})
	}
	c := corev1.Container{Name: "c"}
	for _, np := range p.Ports {
		c.Ports = append(c.Ports, corev1.ContainerPort{Name: np.Name, ContainerPort: int32(np.Port), Protocol: corev1.ProtocolTCP})
	}
	pod.Spec.Containers = []corev1.Container{c}
	return pod
}

// translate is what the Kubernetes source does at every sync: every object
// handed over again, translated unless unchanged since the last sync.
func (o *objects) translate() policy.Input {
	in := policy.Input{Namespaces: make([]policy.Namespace, 0, len(o.namespaces)),
		Pods: make([]policy.Pod, 0, len(o.pods)), Policies: make([]policy.Policy, 0, len(o.policies))}
	for _, ns := range o.namespaces {
		in.Namespaces = append(in.Namespaces, translate.Namespace(ns))
	}
	for _, p := range o.pods {
		in.Pods = append(in.Pods, o.cache.Pod(p))
	}
	for _, np := range o.policies {
		if p, err := o.cache.NetworkPolicy(np); err == nil {
			in.Policies = append(in.Policies, p)
		}
	}
	o.cache.Sweep()
	return in
}

// changesViaAPI is changes through API objects: each change made to the
// objects, everything translated afresh, compiled and synced.
func (b *bench) changesViaAPI(o *objects, kind string, n int) ([]time.Duration, error) {
	var out []time.Duration
	for i := range n {
		start := time.Now()
		switch kind {
		case "pod add":
			o.pods = append(o.pods, podObject(policy.Pod{Namespace: "ns1", Name: fmt.Sprintf("api-new%d", i),
				Labels: map[string]string{"app": "app1"}, IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 245, 1, byte(i)})}}))
		case "relabel":
			p := o.pods[200+i].DeepCopy()
			p.Labels = map[string]string{"app": fmt.Sprintf("app%d", (i*11+5)%100)}
			o.pods[200+i] = p
		default:
			np := o.policies[(i*41)%len(o.policies)].DeepCopy()
			port := intstr.FromInt32(int32(6201 + i))
			np.Spec.Ingress[0].Ports[1].Port = &port
			o.policies[(i*41)%len(o.policies)] = np
		}
		if err := b.syncer.Sync(b.compiler.Compile(o.translate())); err != nil {
			return nil, fmt.Errorf("%s %d via API objects: %w", kind, i, err)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}
