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

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	netlisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/rest"
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
	informers   []named // every informer, started together
	nodes       corelisters.NodeLister
	pods        corelisters.PodLister
	namespaces  corelisters.NamespaceLister
	policies    netlisters.NetworkPolicyLister
	secrets     corelisters.SecretLister // the agent's own namespace only
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

// named is an informer and what it watches, for errors.
type named struct {
	what string
	inf  cache.SharedIndexInformer
}

// dropManagedFields keeps the caches small: Petrel never reads them.
func dropManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// informer watches one built-in resource (cluster-wide when namespace is
// empty) through its group's REST client, as client-go's informer factory
// would, and caches what trim keeps of each object (trim.go).
func informer(rc rest.Interface, resource, namespace string, obj runtime.Object, trim cache.TransformFunc) named {
	lw := cache.NewFilteredListWatchFromClient(rc, resource, namespace, func(*metav1.ListOptions) {})
	inf := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, rc), obj,
		cache.SharedIndexInformerOptions{Indexers: cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}, ObjectDescription: resource})
	_ = inf.SetTransform(trim)
	return named{resource, inf}
}

// crdInformer watches one of Petrel's resources through the dynamic client.
func crdInformer(dyn dynamic.Interface, gvr schema.GroupVersionResource) named {
	r := dyn.Resource(gvr)
	lw := &cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			return r.List(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return r.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformerWithOptions(cache.ToListWatcherWithWatchListSemantics(lw, dyn), &unstructured.Unstructured{},
		cache.SharedIndexInformerOptions{Indexers: cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc}, ObjectDescription: gvr.String()})
	_ = inf.SetTransform(dropManagedFields)
	return named{gvr.GroupResource().String(), inf}
}

func newKubeSource(c *client, nodeName, namespace string, poke func()) *kubeSource {
	drop := dropManagedFields
	nodes, pods := informer(c.core, "nodes", "", &corev1.Node{}, nodeTrim), informer(c.core, "pods", "", &corev1.Pod{}, podTrim)
	nss, pols := informer(c.core, "namespaces", "", &corev1.Namespace{}, drop), informer(c.networking, "networkpolicies", "", &netv1.NetworkPolicy{}, drop)
	secrets := informer(c.core, "secrets", namespace, &corev1.Secret{}, drop)
	// Services stay whole: the address controller writes their status back.
	svcs, eps := informer(c.core, "services", "", &corev1.Service{}, drop), informer(c.discovery, "endpointslices", "", &discoveryv1.EndpointSlice{}, drop)
	peers, configs, pools := crdInformer(c.dyn, bgpPeersGVR), crdInformer(c.dyn, bgpConfigsGVR), crdInformer(c.dyn, lbPoolsGVR)
	k := &kubeSource{
		informers: []named{nodes, pods, nss, pols, secrets, svcs, eps, peers, configs, pools},
		nodeName:  nodeName, namespace: namespace,
		nodes: corelisters.NewNodeLister(nodes.inf.GetIndexer()), pods: corelisters.NewPodLister(pods.inf.GetIndexer()),
		namespaces: corelisters.NewNamespaceLister(nss.inf.GetIndexer()), policies: netlisters.NewNetworkPolicyLister(pols.inf.GetIndexer()),
		secrets:     corelisters.NewSecretLister(secrets.inf.GetIndexer()),
		bgpPeerObjs: cache.NewGenericLister(peers.inf.GetIndexer(), bgpPeersGVR.GroupResource()),
		bgpConfigs:  cache.NewGenericLister(configs.inf.GetIndexer(), bgpConfigsGVR.GroupResource()),
		services:    corelisters.NewServiceLister(svcs.inf.GetIndexer()), slices: discoverylisters.NewEndpointSliceLister(eps.inf.GetIndexer()),
		lbPools: cache.NewGenericLister(pools.inf.GetIndexer(), lbPoolsGVR.GroupResource()), lbWake: make(chan struct{}, 1),
		goodPeers: map[string]goodPeer{}, translated: translate.NewCache(),
	}
	h := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	for _, n := range k.informers {
		_, _ = n.inf.AddEventHandler(h)
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
	_, _ = svcs.inf.AddEventHandler(kick)
	_, _ = pools.inf.AddEventHandler(kick)
	return k
}

// start runs the informers and waits for their first full list.
func (k *kubeSource) start(ctx context.Context) error {
	for _, n := range k.informers {
		go n.inf.RunWithContext(ctx)
	}
	for _, n := range k.informers {
		if !cache.WaitForCacheSync(ctx.Done(), n.inf.HasSynced) {
			return fmt.Errorf("cache of %s did not sync", n.what)
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
