package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	netlisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/petrelnet/petrel/bgp"
	"github.com/petrelnet/petrel/policy"
)

// Kubernetes is watched through shared informers; their handlers only poke
// the loop, which reads the caches at sync time and translates objects into
// Petrel's value types here. The dataplane never sees an API type.

// ASNLabel on a Node overrides the cluster's default AS for that node.
const ASNLabel = "petrel.dev/asn"

// DefaultASN is the AS of nodes without a label or configuration.
const DefaultASN = 64512

type kubeSource struct {
	factory    informers.SharedInformerFactory
	nodes      corelisters.NodeLister
	pods       corelisters.PodLister
	namespaces corelisters.NamespaceLister
	policies   netlisters.NetworkPolicyLister
	nodeName   string
}

// dropManagedFields keeps the caches small: Petrel never reads them.
func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

func newKubeSource(cs kubernetes.Interface, nodeName string, poke func()) *kubeSource {
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTransform(dropManagedFields))
	k := &kubeSource{
		factory: f, nodeName: nodeName,
		nodes: f.Core().V1().Nodes().Lister(), pods: f.Core().V1().Pods().Lister(),
		namespaces: f.Core().V1().Namespaces().Lister(), policies: f.Networking().V1().NetworkPolicies().Lister(),
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	for _, inf := range []cache.SharedIndexInformer{
		f.Core().V1().Nodes().Informer(), f.Core().V1().Pods().Informer(),
		f.Core().V1().Namespaces().Informer(), f.Networking().V1().NetworkPolicies().Informer(),
	} {
		inf.AddEventHandler(h)
	}
	return k
}

// start runs the informers and waits for their first full list.
func (k *kubeSource) start(ctx context.Context) error {
	k.factory.Start(ctx.Done())
	for typ, ok := range k.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync", typ)
		}
	}
	return nil
}

// thisNode returns this node's pod CIDRs and InternalIP; ok is false until
// the node exists with spec.podCIDRs set.
func (k *kubeSource) thisNode() (cidrs []netip.Prefix, ip netip.Addr, ok bool) {
	n, err := k.nodes.Get(k.nodeName)
	if err != nil {
		return nil, netip.Addr{}, false
	}
	for _, c := range n.Spec.PodCIDRs {
		if p, err := netip.ParsePrefix(c); err == nil {
			cidrs = append(cidrs, p.Masked())
		}
	}
	ip = internalIP(n)
	return cidrs, ip, len(cidrs) > 0 && ip.IsValid()
}

func internalIP(n *corev1.Node) netip.Addr {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Is4() {
				return ip
			}
		}
	}
	return netip.Addr{}
}

func nodeASN(n *corev1.Node) uint32 {
	if v, err := strconv.ParseUint(n.Labels[ASNLabel], 10, 32); err == nil && v > 0 {
		return uint32(v)
	}
	return DefaultASN
}

// meshPeers is the node mesh: a session to every other node with an
// InternalIP, at its AS (iBGP when it is this node's, eBGP otherwise).
func (k *kubeSource) meshPeers(template bgp.Peer) ([]bgp.Peer, error) {
	nodes, err := k.nodes.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	slices.SortFunc(nodes, func(a, b *corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	var out []bgp.Peer
	for _, n := range nodes {
		ip := internalIP(n)
		if n.Name == k.nodeName || !ip.IsValid() {
			continue
		}
		p := template
		p.Address, p.ASN = ip, nodeASN(n)
		out = append(out, p)
	}
	return out, nil
}

// policyInput translates the cluster's namespaces, pods and policies. A
// policy that cannot be translated is left out and reported; the others
// still apply.
func (k *kubeSource) policyInput() (policy.Input, error) {
	var in policy.Input
	nss, err1 := k.namespaces.List(labels.Everything())
	pods, err2 := k.pods.List(labels.Everything())
	pols, err3 := k.policies.List(labels.Everything())
	if err := errors.Join(err1, err2, err3); err != nil {
		return in, err
	}
	for _, ns := range nss {
		in.Namespaces = append(in.Namespaces, fromNamespace(ns))
	}
	for _, p := range pods {
		if p.Spec.HostNetwork {
			continue // host-network pods use the node's address: not Petrel's to police
		}
		in.Pods = append(in.Pods, fromPod(p))
	}
	var errs []error
	for _, np := range pols {
		p, err := fromNetworkPolicy(np)
		if err != nil {
			errs = append(errs, fmt.Errorf("networkpolicy %s/%s: %w", np.Namespace, np.Name, err))
			continue
		}
		in.Policies = append(in.Policies, p)
	}
	return in, errors.Join(errs...)
}
