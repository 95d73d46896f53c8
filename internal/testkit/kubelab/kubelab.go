// Package kubelab is the Kubernetes side of a lab (labtest.TorLab in
// Kubernetes mode): a real API server on the lab's management network,
// Petrel's manifest applied, and the objects a cluster would have — Nodes
// with pod CIDRs, BGPPeers for the ToR, pods reported by a stand-in
// kubelet. Shared by the end-to-end tests and `make demo`.
package kubelab

import (
	"context"
	"fmt"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"

	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
)

// AgentUser is the agent's service account: the agents run with exactly
// the manifest's RBAC.
const AgentUser = "system:serviceaccount:petrel-system:petrel-agent"

// NodeLabel selects one lab node (for its BGPPeers).
const NodeLabel = "lab.petrel.dev/node"

var (
	BGPPeers   = schema.GroupVersionResource{Group: "petrel.dev", Version: "v1alpha1", Resource: "bgppeers"}
	BGPConfigs = schema.GroupVersionResource{Group: "petrel.dev", Version: "v1alpha1", Resource: "bgpconfigurations"}
)

// Cluster is the lab's API server and clients for it.
type Cluster struct {
	API *kubetest.Server
	CS  kubernetes.Interface
	Dyn dynamic.Interface
	// dualToR: the lab has a second ToR; IPv4 ToR sessions use BFD.
	dualToR bool
}

// Connect starts nothing: it wraps a running API server (a test's) and
// prepares the lab's agents to use it: the manifest applied, a kubeconfig
// acting as the agent's service account in l.Kubeconfig.
func Connect(ctx context.Context, api *kubetest.Server, l *labtest.TorLab) (*Cluster, error) {
	cfg := api.RestConfig()
	c := &Cluster{API: api, dualToR: l.FRR2 != nil}
	var err error
	if c.CS, err = kubernetes.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if c.Dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if _, err := kubetest.Apply(ctx, cfg, filepath.Join(kubetest.RepoRoot(), "manifests", "petrel.yaml")); err != nil {
		return nil, fmt.Errorf("apply manifests/petrel.yaml: %w", err)
	}
	if l.Kubeconfig, err = api.KubeconfigAs(AgentUser); err != nil {
		return nil, err
	}
	return c, nil
}

// RegisterNodes creates what the cluster knows of each lab node: its Node
// (pod CIDRs as the controller-manager assigns them, its uplink address
// as InternalIP, its AS as the petrel.dev/asn label), and BGPPeers for
// its ToR sessions (v4 and v6); no node-to-node mesh: the ToR carries
// the routes. Creating the BGPPeers after the Nodes is what a cluster
// admin would do.
func (c *Cluster) RegisterNodes(ctx context.Context, l *labtest.TorLab) error {
	if err := c.Apply(ctx, BGPConfigs, "default", map[string]any{"nodeToNodeMesh": false}); err != nil {
		return err
	}
	for _, n := range l.Nodes {
		if err := c.RegisterNode(ctx, n); err != nil {
			return err
		}
		if err := c.RegisterPeers(ctx, n); err != nil {
			return err
		}
	}
	return nil
}

// RegisterPeers creates n's BGPPeers for its ToR sessions (v4, v6, and
// with two ToRs tor2).
func (c *Cluster) RegisterPeers(ctx context.Context, n *labtest.Node) error {
	sessions := []string{"v4", "v6"}
	if c.dualToR {
		sessions = append(sessions, "tor2")
	}
	for _, fam := range sessions {
		if err := c.RegisterPeer(ctx, n, fam); err != nil {
			return err
		}
	}
	return nil
}

// RegisterPeer creates the BGPPeer "tor-<node>-<session>": n's session
// with its ToR over IPv4 ("v4") or IPv6 ("v6") with the lab's short
// timers, or with the second ToR ("tor2"): BFD at 100 ms x 3 and a 9 s
// hold time.
func (c *Cluster) RegisterPeer(ctx context.Context, n *labtest.Node, session string) error {
	spec := map[string]any{"peerAddress": n.TorAddr(), "peerASN": int64(65000),
		"nodeSelector": map[string]any{"matchLabels": map[string]any{NodeLabel: n.Name}},
		"holdTime":     "3s", "keepaliveTime": "1s", "connectRetry": "1s"}
	bfd := map[string]any{"enabled": true, "minTx": "100ms", "minRx": "100ms", "multiplier": int64(3)}
	switch session {
	case "v4":
		if c.dualToR {
			spec["bfd"] = bfd
		}
	case "v6":
		spec["peerAddress"] = n.TorAddr6()
	case "tor2":
		spec["peerAddress"], spec["holdTime"], spec["keepaliveTime"], spec["bfd"] = n.Tor2Addr(), "9s", "3s", bfd
	}
	return c.Apply(ctx, BGPPeers, "tor-"+n.Name+"-"+session, spec)
}

// RegisterNode creates n's Node object with its status, as the kubelet
// and the controller-manager would.
func (c *Cluster) RegisterNode(ctx context.Context, n *labtest.Node) error {
	obj := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{
			NodeLabel: n.Name, "petrel.dev/asn": fmt.Sprint(n.ASN()), "kubernetes.io/hostname": n.Name}},
		Spec: corev1.NodeSpec{PodCIDRs: []string{n.PodNet, n.PodNet6}},
	}
	created, err := c.CS.CoreV1().Nodes().Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	nodes := c.CS.CoreV1().Nodes()
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.Addr()}, {Type: corev1.NodeHostName, Address: n.Name}}
		_, err := nodes.UpdateStatus(ctx, created, metav1.UpdateOptions{})
		if err != nil {
			if cur, gerr := nodes.Get(ctx, n.Name, metav1.GetOptions{}); gerr == nil {
				created = cur
			}
		}
		return err
	})
}

// Apply creates or replaces a cluster-scoped Petrel object.
func (c *Cluster) Apply(ctx context.Context, gvr schema.GroupVersionResource, name string, spec map[string]any) error {
	kind := map[string]string{"bgppeers": "BGPPeer", "bgpconfigurations": "BGPConfiguration", "loadbalancerippools": "LoadBalancerIPPool"}[gvr.Resource]
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": gvr.GroupVersion().String(), "kind": kind,
		"metadata": map[string]any{"name": name}, "spec": spec}}
	r := c.Dyn.Resource(gvr)
	if old, err := r.Get(ctx, name, metav1.GetOptions{}); err == nil {
		u.SetResourceVersion(old.GetResourceVersion())
		_, err = r.Update(ctx, u, metav1.UpdateOptions{})
		return err
	}
	_, err := r.Create(ctx, u, metav1.CreateOptions{})
	return err
}

// AddPod plays the kubelet: the Pod object bound to n, the real CNI
// binary wiring it, and its addresses reported in the Pod's status.
func (c *Cluster) AddPod(ctx context.Context, l *labtest.TorLab, n *labtest.Node, name string, labels map[string]string) (labtest.Pod, error) {
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: labels},
		Spec: corev1.PodSpec{NodeName: n.Name, Containers: []corev1.Container{{Name: "c", Image: "none"}}}}
	created, err := c.CS.CoreV1().Pods("default").Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return labtest.Pod{}, err
	}
	p, err := l.AddPod(n, name)
	if err != nil {
		return p, err
	}
	// Controllers (a real kube-controller-manager in some labs) may write
	// the Pod between its creation and this status: read it again then.
	pods := c.CS.CoreV1().Pods("default")
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		created.Status.PodIP = p.IP
		created.Status.PodIPs = []corev1.PodIP{{IP: p.IP}}
		if p.IP6 != "" {
			created.Status.PodIPs = append(created.Status.PodIPs, corev1.PodIP{IP: p.IP6})
		}
		_, err := pods.UpdateStatus(ctx, created, metav1.UpdateOptions{})
		if err != nil {
			if cur, gerr := pods.Get(ctx, name, metav1.GetOptions{}); gerr == nil {
				created = cur
			}
		}
		return err
	})
	return p, err
}
