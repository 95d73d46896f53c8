// Package kube is the agent's Source in Kubernetes mode: shared informers
// for Nodes, Pods, Namespaces, NetworkPolicies, Secrets and Petrel's CRDs,
// the node mesh and route reflector view, status conditions and Events,
// and the start-up access check. It is the only importer of client-go.
package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	netlisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/petrelnet/petrel/agent/translate"
	"github.com/petrelnet/petrel/policy"
)

// Kubernetes is watched through shared informers; their handlers only poke
// the loop, which reads the caches at sync time and translates objects into
// Petrel's value types here. The dataplane never sees an API type.

// ASNLabel on a Node overrides the cluster's default AS for that node.
const ASNLabel = "petrel.dev/asn"

type kubeSource struct {
	factory     informers.SharedInformerFactory
	nsFactory   informers.SharedInformerFactory // the agent's own namespace: Secrets
	crdFactory  dynamicinformer.DynamicSharedInformerFactory
	nodes       corelisters.NodeLister
	pods        corelisters.PodLister
	namespaces  corelisters.NamespaceLister
	policies    netlisters.NetworkPolicyLister
	secrets     corelisters.SecretLister
	bgpPeerObjs cache.GenericLister
	bgpConfigs  cache.GenericLister
	services    corelisters.ServiceLister
	slices      discoverylisters.EndpointSliceLister
	lbPools     cache.GenericLister
	lbWake      chan struct{} // wakes the LoadBalancer address controller (lbcontroller.go)
	nodeName    string
	namespace   string         // where password Secrets live
	extras      []netip.Prefix // importExtras: what else BGPPeers may send
	translated  *translate.Cache

	// Last valid versions of Petrel's objects; touched only by the loop.
	goodConfig BGPConfigurationSpec
	goodPeers  map[string]goodPeer
	last       clusterView // the last view while this node's Node existed
}

// dropManagedFields keeps the caches small: Petrel never reads them.
func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

func newKubeSource(cs kubernetes.Interface, dyn dynamic.Interface, nodeName, namespace string, poke func()) *kubeSource {
	f := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTransform(dropManagedFields))
	nsf := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithTransform(dropManagedFields), informers.WithNamespace(namespace))
	crd := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0)
	k := &kubeSource{
		factory: f, nsFactory: nsf, crdFactory: crd, nodeName: nodeName, namespace: namespace,
		nodes: f.Core().V1().Nodes().Lister(), pods: f.Core().V1().Pods().Lister(),
		namespaces: f.Core().V1().Namespaces().Lister(), policies: f.Networking().V1().NetworkPolicies().Lister(),
		secrets:     nsf.Core().V1().Secrets().Lister(),
		bgpPeerObjs: crd.ForResource(bgpPeersGVR).Lister(), bgpConfigs: crd.ForResource(bgpConfigsGVR).Lister(),
		services: f.Core().V1().Services().Lister(), slices: f.Discovery().V1().EndpointSlices().Lister(),
		lbPools: crd.ForResource(lbPoolsGVR).Lister(), lbWake: make(chan struct{}, 1),
		goodPeers: map[string]goodPeer{}, translated: translate.NewCache(),
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	infs := []cache.SharedIndexInformer{
		f.Core().V1().Nodes().Informer(), f.Core().V1().Pods().Informer(),
		f.Core().V1().Namespaces().Informer(), f.Networking().V1().NetworkPolicies().Informer(),
		nsf.Core().V1().Secrets().Informer(),
		f.Core().V1().Services().Informer(), f.Discovery().V1().EndpointSlices().Informer(),
	}
	for _, gvr := range []schema.GroupVersionResource{bgpPeersGVR, bgpConfigsGVR, lbPoolsGVR} {
		inf := crd.ForResource(gvr).Informer()
		_ = inf.SetTransform(dropManagedFields)
		infs = append(infs, inf)
	}
	for _, inf := range infs {
		inf.AddEventHandler(h)
	}
	// Services and pools also wake the address controller.
	wake := func() {
		select {
		case k.lbWake <- struct{}{}:
		default:
		}
	}
	kick := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { wake() },
		UpdateFunc: func(any, any) { wake() },
		DeleteFunc: func(any) { wake() },
	}
	f.Core().V1().Services().Informer().AddEventHandler(kick)
	crd.ForResource(lbPoolsGVR).Informer().AddEventHandler(kick)
	return k
}

// start runs the informers and waits for their first full list.
func (k *kubeSource) start(ctx context.Context) error {
	k.factory.Start(ctx.Done())
	k.nsFactory.Start(ctx.Done())
	k.crdFactory.Start(ctx.Done())
	for typ, ok := range k.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync", typ)
		}
	}
	for typ, ok := range k.nsFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %v did not sync", typ)
		}
	}
	for gvr, ok := range k.crdFactory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache of %s did not sync", gvr.GroupResource())
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
	cidrs = podCIDRs(n)
	for _, a := range internalIPs(n) {
		if a.Is4() {
			ip = a // the router ID
		}
	}
	return cidrs, ip, len(cidrs) > 0 && ip.IsValid()
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
	in.Namespaces = make([]policy.Namespace, 0, len(nss))
	in.Pods = make([]policy.Pod, 0, len(pods)) // no regrowth at every sync
	in.Policies = make([]policy.Policy, 0, len(pols))
	for _, ns := range nss {
		in.Namespaces = append(in.Namespaces, translate.Namespace(ns))
	}
	for _, p := range pods {
		if p.Spec.HostNetwork {
			continue // host-network pods use the node's address: not Petrel's to police
		}
		in.Pods = append(in.Pods, k.translated.Pod(p))
	}
	defer k.translated.Sweep()
	var errs []error
	for _, np := range pols {
		p, err := k.translated.NetworkPolicy(np)
		if err != nil {
			errs = append(errs, fmt.Errorf("networkpolicy %s/%s: %w", np.Namespace, np.Name, err))
			continue
		}
		in.Policies = append(in.Policies, p)
	}
	return in, errors.Join(errs...)
}

// policyUID is a NetworkPolicy's UID from the cache, for Events about it.
func (k *kubeSource) policyUID(namespace, name string) types.UID {
	if np, err := k.policies.NetworkPolicies(namespace).Get(name); err == nil {
		return np.UID
	}
	return ""
}
