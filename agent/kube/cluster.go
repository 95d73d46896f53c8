package kube

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/petrelnet/petrel/agent/config"
	"github.com/petrelnet/petrel/bgp"
)

// clusterView is what the cluster asks of this node's BGP, rebuilt from
// the informers' caches at every sync.
type clusterView struct {
	asn            uint32
	routeReflector bool
	clusterID      netip.Addr
	communities    []uint32
	peers          []bgp.Peer            // the mesh, then the BGPPeers selecting this node
	sources        map[netip.Addr]string // who asked for each peer, for logs and Events
	verdicts       []verdict             // one per Petrel object
	podCIDRs       []netip.Prefix        // this node's, as its Node says now
	nodeCIDRs      []netip.Prefix        // every other node's, as the API gives them
	// nodeGone: this node's Node object was deleted. Its pod CIDRs may
	// go to another node: they are withdrawn, everything else stays.
	nodeGone bool
	// Service announcements (services.go) and the drain.
	services   serviceView
	drain      bool
	drainDelay time.Duration
}

// verdict is whether the agent can use an object, and why not.
type verdict struct {
	gvr schema.GroupVersionResource
	obj *unstructured.Unstructured
	err error
}

// goodPeer is the last valid version of a BGPPeer: an invalid edit keeps
// the session as it was instead of dropping it.
type goodPeer struct {
	peer     bgp.Peer
	selector labels.Selector
}

// view computes the cluster view for this node. fileASN is the config
// file's asn (zero when absent).
func (k *kubeSource) view(fileASN uint32) (clusterView, error) {
	v := clusterView{sources: map[netip.Addr]string{}}
	me, err := k.nodes.Get(k.nodeName)
	if apierrors.IsNotFound(err) {
		v = k.last
		v.nodeGone, v.verdicts = true, nil
		return v, nil
	}
	if err != nil {
		return v, fmt.Errorf("node %s: %w", k.nodeName, err)
	}
	defer func() { k.last = v }()
	v.podCIDRs = podCIDRs(me)
	if nodes, err := k.nodes.List(labels.Everything()); err == nil {
		for _, n := range nodes {
			if n.Name != k.nodeName {
				v.nodeCIDRs = append(v.nodeCIDRs, podCIDRs(n)...)
			}
		}
		slices.SortFunc(v.nodeCIDRs, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	}
	spec := k.bgpConfiguration(&v)
	clusterASN := firstNonZero(spec.ASN, fileASN, config.DefaultASN)
	v.asn = nodeASN(me, clusterASN)
	v.communities, _ = spec.communities() // checked in bgpConfiguration
	var errs []error
	if spec.NodeToNodeMesh == nil || *spec.NodeToNodeMesh {
		errs = append(errs, k.mesh(&v, me, spec, clusterASN))
	}
	errs = append(errs, k.bgpPeers(&v, me))
	v.services = k.serviceView(me, spec.ServiceAdvertisement)
	v.drain, v.drainDelay = me.Annotations[DrainAnnotation] == "true", spec.drainDelay()
	return v, errors.Join(errs...)
}

func firstNonZero(vs ...uint32) uint32 {
	for _, v := range vs {
		if v != 0 {
			return v
		}
	}
	return 0
}

// bgpConfiguration returns the spec of the BGPConfiguration named default
// (its last valid version when the current one is not), and a verdict for
// every BGPConfiguration.
func (k *kubeSource) bgpConfiguration(v *clusterView) BGPConfigurationSpec {
	objs, _ := k.bgpConfigs.List(labels.Everything())
	found := false
	for _, o := range objs {
		u := o.(*unstructured.Unstructured)
		if u.GetName() != DefaultBGPConfiguration {
			v.verdicts = append(v.verdicts, verdict{gvr: bgpConfigsGVR, obj: u,
				err: fmt.Errorf("ignored: only the BGPConfiguration named %q is used", DefaultBGPConfiguration)})
			continue
		}
		found = true
		var spec BGPConfigurationSpec
		err := decodeSpec(u, &spec)
		if err == nil {
			err = spec.check()
		}
		v.verdicts = append(v.verdicts, verdict{gvr: bgpConfigsGVR, obj: u, err: err})
		if err == nil {
			k.goodConfig = spec
		}
	}
	if !found {
		k.goodConfig = BGPConfigurationSpec{}
	}
	spec := k.goodConfig
	if spec.RouteReflectors != nil {
		v.clusterID, _ = netip.ParseAddr(spec.RouteReflectors.ClusterID)
	}
	return spec
}

// check names the first field the agent cannot use.
func (s BGPConfigurationSpec) check() error {
	if _, err := s.communities(); err != nil {
		return err
	}
	if err := s.ServiceAdvertisement.check(); err != nil {
		return err
	}
	if s.DrainDelay < 0 {
		return fmt.Errorf("spec.drainDelay: %s is negative", time.Duration(s.DrainDelay))
	}
	if rr := s.RouteReflectors; rr != nil {
		if _, err := metav1.LabelSelectorAsSelector(&rr.NodeSelector); err != nil {
			return fmt.Errorf("spec.routeReflectors.nodeSelector: %w", err)
		}
		if id, err := netip.ParseAddr(rr.ClusterID); rr.ClusterID != "" && (err != nil || !id.Is4()) {
			return fmt.Errorf("spec.routeReflectors.clusterID: %q is not an IPv4 address", rr.ClusterID)
		}
	}
	p := s.meshOptions().Apply(bgp.Peer{Address: netip.MustParseAddr("192.0.2.1"), ASN: 1})
	if err := p.Validate(); err != nil {
		return fmt.Errorf("spec.mesh: %w", err)
	}
	return nil
}

// mesh adds a session to every other node with an InternalIP and pod
// CIDRs, one per address family of its InternalIPs. A node may announce
// only its own pod CIDRs over its session. With route reflectors, only
// they peer with everyone; the others peer with them alone.
func (k *kubeSource) mesh(v *clusterView, me *corev1.Node, spec BGPConfigurationSpec, clusterASN uint32) error {
	nodes, err := k.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	var rrSel labels.Selector
	if spec.RouteReflectors != nil {
		rrSel, _ = metav1.LabelSelectorAsSelector(&spec.RouteReflectors.NodeSelector)
	}
	isRR := func(n *corev1.Node) bool { return rrSel != nil && rrSel.Matches(labels.Set(n.Labels)) }
	v.routeReflector = isRR(me)
	opts := spec.meshOptions()
	slices.SortFunc(nodes, func(a, b *corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	for _, n := range nodes {
		cidrs := podCIDRs(n)
		if n.Name == k.nodeName || len(cidrs) == 0 {
			continue
		}
		if rrSel != nil && !v.routeReflector && !isRR(n) {
			continue
		}
		for _, ip := range internalIPs(n) {
			p := opts.Apply(bgp.Peer{Address: ip, ASN: nodeASN(n, clusterASN)})
			if rrSel == nil || !isRR(n) {
				p.Accept = cidrs // a route reflector passes on others' routes
				p.AcceptServices = true
			}
			p.RouteReflectorClient = v.routeReflector && !isRR(n)
			v.peers = append(v.peers, p)
			v.sources[ip] = "node " + n.Name
		}
	}
	return nil
}

// bgpPeers adds the BGPPeers that select this node.
func (k *kubeSource) bgpPeers(v *clusterView, me *corev1.Node) error {
	objs, _ := k.bgpPeerObjs.List(labels.Everything())
	slices.SortFunc(objs, func(a, b runtime.Object) int {
		return strings.Compare(a.(*unstructured.Unstructured).GetName(), b.(*unstructured.Unstructured).GetName())
	})
	seen := map[string]bool{}
	var errs []error
	for _, o := range objs {
		u := o.(*unstructured.Unstructured)
		name := u.GetName()
		seen[name] = true
		g, err := k.decodePeer(u)
		v.verdicts = append(v.verdicts, verdict{gvr: bgpPeersGVR, obj: u, err: err})
		if err == nil {
			k.goodPeers[name] = g
		}
		g, ok := k.goodPeers[name]
		if !ok || !g.selector.Matches(labels.Set(me.Labels)) {
			continue
		}
		if slices.Contains(internalIPs(me), g.peer.Address) {
			errs = append(errs, fmt.Errorf("BGPPeer %s: peerAddress %s is this node's own address", name, g.peer.Address))
			continue
		}
		if src, dup := v.sources[g.peer.Address]; dup {
			errs = append(errs, fmt.Errorf("BGPPeer %s: peerAddress %s is already a peer of this node (%s)", name, g.peer.Address, src))
			continue
		}
		// A router outside the cluster may pass on each node's pod CIDR
		// exactly as the API gives it, and the configured extras; never a
		// more-specific carved out of a pod CIDR.
		peer := g.peer
		peer.AcceptExact, peer.Accept, peer.Guarded = v.nodeCIDRs, k.extras, true
		v.peers = append(v.peers, peer)
		v.sources[g.peer.Address] = "BGPPeer " + name
	}
	for name := range k.goodPeers {
		if !seen[name] {
			delete(k.goodPeers, name)
		}
	}
	return errors.Join(errs...)
}

func (k *kubeSource) decodePeer(u *unstructured.Unstructured) (goodPeer, error) {
	var spec BGPPeerSpec
	if err := decodeSpec(u, &spec); err != nil {
		return goodPeer{}, err
	}
	sel := labels.Everything()
	if spec.NodeSelector != nil {
		s, err := metav1.LabelSelectorAsSelector(spec.NodeSelector)
		if err != nil {
			return goodPeer{}, fmt.Errorf("spec.nodeSelector: %w", err)
		}
		sel = s
	}
	var password string
	if ref := spec.PasswordSecretRef; ref != nil {
		s, err := k.secrets.Secrets(k.namespace).Get(ref.Name)
		if err != nil {
			return goodPeer{}, fmt.Errorf("spec.passwordSecretRef: Secret %s/%s: %w", k.namespace, ref.Name, err)
		}
		b, ok := s.Data[ref.Key]
		if !ok || len(b) == 0 {
			return goodPeer{}, fmt.Errorf("spec.passwordSecretRef: Secret %s/%s has no key %q", k.namespace, ref.Name, ref.Key)
		}
		password = string(b)
	}
	p, err := spec.toBGP(password)
	return goodPeer{peer: p, selector: sel}, err
}

func podCIDRs(n *corev1.Node) []netip.Prefix {
	var out []netip.Prefix
	for _, c := range n.Spec.PodCIDRs {
		if p, err := netip.ParsePrefix(c); err == nil {
			out = append(out, p.Masked())
		}
	}
	return out
}

// internalIPs are a node's InternalIPs, at most one per family.
func internalIPs(n *corev1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		ip, err := netip.ParseAddr(a.Address)
		if a.Type != corev1.NodeInternalIP || err != nil {
			continue
		}
		if !slices.ContainsFunc(out, func(o netip.Addr) bool { return o.Is4() == ip.Is4() }) {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// nodeASN is the node's petrel.dev/asn label, else the cluster's AS.
func nodeASN(n *corev1.Node, cluster uint32) uint32 {
	if v, err := strconv.ParseUint(n.Labels[ASNLabel], 10, 32); err == nil && v > 0 {
		return uint32(v)
	}
	return cluster
}
