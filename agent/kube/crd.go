package kube

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/petrelnet/petrel/agent/config"
	"github.com/petrelnet/petrel/bgp"
)

// Petrel's custom resources (group petrel.dev, version v1alpha1) are read
// through dynamic informers and decoded into the types below. The schema
// in manifests/petrel.yaml checks their shape; the agent checks their
// meaning and reports what it cannot use in the object's status.

// CRD group and version.
const (
	CRDGroup   = "petrel.dev"
	CRDVersion = "v1alpha1"
)

var (
	bgpPeersGVR   = schema.GroupVersionResource{Group: CRDGroup, Version: CRDVersion, Resource: "bgppeers"}
	bgpConfigsGVR = schema.GroupVersionResource{Group: CRDGroup, Version: CRDVersion, Resource: "bgpconfigurations"}
)

// DefaultBGPConfiguration is the name of the one BGPConfiguration used.
const DefaultBGPConfiguration = "default"

// BGPPeerSpec is a BGP neighbor of the nodes its nodeSelector selects (all
// nodes when absent), such as the top-of-rack router of a rack.
type BGPPeerSpec struct {
	PeerAddress       string                `json:"peerAddress"`
	PeerASN           uint32                `json:"peerASN"`
	NodeSelector      *metav1.LabelSelector `json:"nodeSelector,omitempty"`
	PasswordSecretRef *SecretKeyRef         `json:"passwordSecretRef,omitempty"`
	config.PeerOptions
}

// SecretKeyRef names a key of a Secret in the agent's namespace.
type SecretKeyRef struct {
	Name string `json:"name"`
	Key  string `json:"key"`
}

// BGPConfigurationSpec holds the cluster's BGP defaults.
type BGPConfigurationSpec struct {
	// ASN of nodes without a petrel.dev/asn label; zero: the config
	// file's asn, else 64512.
	ASN uint32 `json:"asn,omitempty"`
	// NodeToNodeMesh peers every node with every other (or with the
	// route reflectors); default true.
	NodeToNodeMesh *bool `json:"nodeToNodeMesh,omitempty"`
	// Mesh holds the mesh sessions' timers, BFD and graceful restart.
	Mesh config.PeerOptions `json:"mesh"`
	// RouteReflectors, when set, replaces the full mesh: the selected
	// nodes reflect routes, every other node peers with them only.
	RouteReflectors *RouteReflectors `json:"routeReflectors,omitempty"`
	// Communities ("AS:VALUE") tag every node's pod CIDR announcements.
	Communities []string `json:"communities,omitempty"`
	// ServiceAdvertisement says which Service addresses nodes announce.
	ServiceAdvertisement ServiceAdvertisement `json:"serviceAdvertisement"`
	// DrainDelay is how long a draining node (Node annotation
	// petrel.dev/drain: "true") keeps announcing its Service addresses,
	// marked GRACEFUL_SHUTDOWN, before it withdraws them; default 30s.
	DrainDelay config.Duration `json:"drainDelay,omitempty"`
}

// ServiceAdvertisement selects the Service addresses the nodes announce.
type ServiceAdvertisement struct {
	// LoadBalancerIPs: addresses from LoadBalancerIPPools (default true).
	LoadBalancerIPs *bool `json:"loadBalancerIPs,omitempty"`
	// ExternalIPs: the Services' spec.externalIPs.
	ExternalIPs bool `json:"externalIPs,omitempty"`
	// ClusterIPs: ServiceCIDRs, each as one aggregate from every node.
	ClusterIPs   bool     `json:"clusterIPs,omitempty"`
	ServiceCIDRs []string `json:"serviceCIDRs,omitempty"`
	// NodeSelector: the nodes that announce (all when absent).
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`
}

// DrainAnnotation on a Node takes it out of service (RFC 8326).
const DrainAnnotation = "petrel.dev/drain"

func (s BGPConfigurationSpec) drainDelay() time.Duration {
	if s.DrainDelay == 0 {
		return 30 * time.Second
	}
	return time.Duration(s.DrainDelay)
}

// check names the first field of the Service advertisement the agent
// cannot use.
func (a ServiceAdvertisement) check() error {
	for i, c := range a.ServiceCIDRs {
		if p, err := netip.ParsePrefix(c); err != nil || p != p.Masked() {
			return fmt.Errorf("spec.serviceAdvertisement.serviceCIDRs[%d]: %q is not a CIDR", i, c)
		}
	}
	if a.ClusterIPs && len(a.ServiceCIDRs) == 0 {
		return errors.New("spec.serviceAdvertisement.clusterIPs: needs serviceCIDRs (the API server's --service-cluster-ip-range)")
	}
	if a.NodeSelector != nil {
		if _, err := metav1.LabelSelectorAsSelector(a.NodeSelector); err != nil {
			return fmt.Errorf("spec.serviceAdvertisement.nodeSelector: %w", err)
		}
	}
	return nil
}

// RouteReflectors selects the route reflector nodes.
type RouteReflectors struct {
	NodeSelector metav1.LabelSelector `json:"nodeSelector"`
	ClusterID    string               `json:"clusterID,omitempty"`
}

// decodeSpec reads an object's spec strictly: a field the agent does not
// know is an error, not a silently ignored setting.
func decodeSpec(u *unstructured.Unstructured, into any) error {
	b, err := json.Marshal(u.Object["spec"])
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		return fmt.Errorf("spec: %w", err)
	}
	return nil
}

// toBGP checks a BGPPeer's meaning and converts it; password is the
// resolved secret.
func (s BGPPeerSpec) toBGP(password string) (bgp.Peer, error) {
	addr, err := netip.ParseAddr(s.PeerAddress)
	if err != nil {
		return bgp.Peer{}, fmt.Errorf("spec.peerAddress: %q is not an IP address", s.PeerAddress)
	}
	if s.PeerASN == 0 {
		return bgp.Peer{}, errors.New("spec.peerASN: required")
	}
	o := s.PeerOptions
	o.Defaults()
	p := o.Apply(bgp.Peer{Address: addr.Unmap(), ASN: s.PeerASN, Password: password})
	if err := p.Validate(); err != nil {
		return bgp.Peer{}, fmt.Errorf("spec: %w", err)
	}
	return p, nil
}

// meshOptions are the mesh sessions' settings: short timers and graceful
// restart unless the BGPConfiguration says otherwise.
func (s BGPConfigurationSpec) meshOptions() config.PeerOptions {
	o := s.Mesh
	o.ConnectRetry = config.Or(o.ConnectRetry, config.Duration(2*time.Second))
	o.HoldTime = config.Or(o.HoldTime, config.Duration(9*time.Second))
	o.KeepaliveTime = config.Or(o.KeepaliveTime, config.Duration(3*time.Second))
	o.Defaults()
	return o
}

func (s BGPConfigurationSpec) communities() ([]uint32, error) {
	var out []uint32
	for i, c := range s.Communities {
		v, err := bgp.ParseCommunity(c)
		if err != nil {
			return nil, fmt.Errorf("spec.communities[%d]: %w", i, err)
		}
		out = append(out, v)
	}
	return out, nil
}
