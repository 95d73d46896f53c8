package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/petrelnet/petrel/internal/testkit/kubelab"
	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
)

// cluster starts the API server in the lab's management namespace,
// applies the manifest, registers the nodes and their ToR BGPPeers, and
// starts the agents in Kubernetes mode.
func (d *demo) cluster() error {
	ctx := context.Background()
	t0 := time.Now()
	api, err := kubetest.Launch(filepath.Join(d.lab.Dir, "kube"), d.lab.Mgmt, labtest.MgmtHost)
	if err != nil {
		return err
	}
	d.api = api
	fmt.Printf("  kube-apiserver %s + etcd ready at %s in %s\n", kubetest.Version, api.URL, time.Since(t0).Round(time.Millisecond))
	if d.kube, err = kubelab.Connect(ctx, api, d.lab); err != nil {
		return err
	}
	fmt.Println("  applied manifests/petrel.yaml (CRDs, RBAC); the agents act as system:serviceaccount:petrel-system:petrel-agent")
	if err := d.kube.RegisterNodes(ctx, d.lab); err != nil {
		return err
	}
	fmt.Println("  created Nodes (spec.podCIDRs, InternalIP, petrel.dev/asn), BGPConfiguration default (no mesh), a BGPPeer per ToR session")
	d.agentsStarted = time.Now()
	for _, n := range d.lab.Nodes {
		if err := d.lab.StartAgent(n); err != nil {
			return err
		}
	}
	return nil
}

// clusterView prints what the API says: the BGPPeers with their Accepted
// condition, the Nodes' NetworkUnavailable condition and Petrel's Events.
func (d *demo) clusterView() {
	ctx := context.Background()
	section("In the API: BGPPeers")
	peers, err := d.kube.Dyn.Resource(kubelab.BGPPeers).List(ctx, metav1.ListOptions{})
	if !d.check(err == nil, fmt.Sprintf("list BGPPeers: %s", errText(err))) {
		return
	}
	fmt.Printf("  %-18s %-22s %-7s %s\n", "NAME", "PEER", "ASN", "ACCEPTED")
	accepted := 0
	for _, p := range peers.Items {
		addr, _, _ := unstructured.NestedString(p.Object, "spec", "peerAddress")
		asn, _, _ := unstructured.NestedInt64(p.Object, "spec", "peerASN")
		st := condition(p)
		if st == "True" {
			accepted++
		}
		fmt.Printf("  %-18s %-22s %-7d %s\n", p.GetName(), addr, asn, st)
	}
	d.check(accepted == len(peers.Items), "every BGPPeer is Accepted by the agents")
	section("In the API: Nodes")
	ready := 0
	for _, n := range d.lab.Nodes {
		obj, err := d.kube.CS.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			continue
		}
		for _, c := range obj.Status.Conditions {
			if c.Type == corev1.NodeNetworkUnavailable {
				fmt.Printf("  %-8s podCIDRs %-40s NetworkUnavailable=%s (%s)\n", n.Name, strings.Join(obj.Spec.PodCIDRs, ","), c.Status, c.Reason)
				if c.Status == corev1.ConditionFalse {
					ready++
				}
			}
		}
	}
	d.check(ready == len(d.lab.Nodes), "every Node has NetworkUnavailable=False, set by its agent")
	section("In the API: Events from petrel-agent")
	evs, _ := d.kube.CS.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "source=petrel-agent"})
	for _, e := range evs.Items {
		fmt.Printf("  %-8s %-22s %-8s %s\n", e.Type, e.Reason, e.InvolvedObject.Name, e.Message)
	}
}

func condition(u unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Accepted" {
			return fmt.Sprint(m["status"])
		}
	}
	return "(none yet)"
}
