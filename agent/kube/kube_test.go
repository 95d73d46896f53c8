package kube

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
	"github.com/petrelnet/petrel/policy"
)

func clientFor(t testing.TB, s *kubetest.Server) *kubernetes.Clientset {
	cs, err := kubernetes.NewForConfig(s.RestConfig())
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// agentClient is the agent's own client with cfg's credentials.
func agentClient(t testing.TB, cfg *rest.Config) *client {
	t.Helper()
	c, err := newClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func node(name, ip string, cidrs []string, lbls map[string]string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}, Spec: corev1.NodeSpec{PodCIDRs: cidrs},
		Status: corev1.NodeStatus{Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}}}
}

// createNode creates n with its status, as the kubelet registers a node.
func createNode(t testing.TB, cs kubernetes.Interface, n *corev1.Node) {
	t.Helper()
	ctx := context.Background()
	created, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.ResourceVersion = created.ResourceVersion
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestKubeSource runs the informers against a real API server: Nodes become
// this node's CIDRs and the mesh's peers, NetworkPolicies and pods become
// policy input, and an API server restart only pauses it.
func TestKubeSource(t *testing.T) {
	s := kubetest.Start(t)
	cs := clientFor(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	create := func(n *corev1.Node) { createNode(t, cs, n) }
	create(node("node1", "10.99.1.2", []string{"10.244.1.0/24", "fd00:10:244:1::/64"}, nil))
	create(node("node2", "10.99.2.2", []string{"10.244.2.0/24"}, nil))
	create(node("node3", "10.99.3.2", []string{"10.244.3.0/24"}, map[string]string{ASNLabel: "65003"}))

	// Before the manifest: the agent would refuse to start, saying why.
	if err := checkAccess(ctx, dynamic.NewForConfigOrDie(s.RestConfig()), "petrel-system"); err == nil || !strings.Contains(err.Error(), "bgppeers.petrel.dev: the CRD is not installed") {
		t.Fatalf("no CRDs: %v", err)
	}
	applyManifest(t, s)
	nobody := s.RestConfig()
	nobody.Impersonate.UserName = "system:serviceaccount:default:nobody"
	if err := checkAccess(ctx, dynamic.NewForConfigOrDie(nobody), "petrel-system"); err == nil || !strings.Contains(err.Error(), "forbidden: the agent's RBAC is missing") {
		t.Fatalf("no RBAC: %v", err)
	}
	k := startSource(t, ctx, s, "node1")
	cidrs, ip, ok := k.thisNode()
	if !ok || fmt.Sprint(cidrs) != "[10.244.1.0/24 fd00:10:244:1::/64]" || ip.String() != "10.99.1.2" {
		t.Fatalf("this node: %v %v %v", cidrs, ip, ok)
	}
	peers := func() string { return peersOf(k) }
	wait.Equal(t, 15*time.Second, "mesh peers", "10.99.2.2/64512[10.244.2.0/24] 10.99.3.2/65003[10.244.3.0/24] ", peers)
	if err := cs.CoreV1().Nodes().Delete(ctx, "node3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 15*time.Second, "mesh peers after node3 deleted", "10.99.2.2/64512[10.244.2.0/24] ", peers)

	// NetworkPolicy create, update, delete; a pod's labels.
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"team": "a"}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	np := &netv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "isolate", Namespace: "web"},
		Spec: netv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "api"}}}}
	if _, err := cs.NetworkingV1().NetworkPolicies("web").Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	polState := func() string {
		in, err := k.policyInput()
		if err != nil {
			return err.Error()
		}
		out := ""
		for _, p := range in.Policies {
			out += fmt.Sprintf("%s/%s ingress=%v egress=%v rules=%d; ", p.Namespace, p.Name, p.Ingress, p.Egress, len(p.IngressRules))
		}
		return out
	}
	wait.Equal(t, 15*time.Second, "policy created", "web/isolate ingress=true egress=false rules=0; ", polState)
	np, _ = cs.NetworkingV1().NetworkPolicies("web").Get(ctx, "isolate", metav1.GetOptions{})
	np.Spec.Ingress = []netv1.NetworkPolicyIngressRule{{From: []netv1.NetworkPolicyPeer{{NamespaceSelector: &metav1.LabelSelector{}}}}}
	if _, err := cs.NetworkingV1().NetworkPolicies("web").Update(ctx, np, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 15*time.Second, "policy updated", "web/isolate ingress=true egress=false rules=1; ", polState)

	// The kernel refused the policy on this node: a Warning Event on it,
	// once per change of the error.
	rep, stopEvents := newReporter(agentClient(t, s.RestConfig()), "node1")
	defer stopEvents()
	refused := []policy.Refusal{{Namespace: "web", Name: "isolate", Err: errors.New("netlink receive: file exists")}}
	rep.refusedPolicies(refused, k.policyUID)
	rep.refusedPolicies(refused, k.policyUID)
	wait.Equal(t, 15*time.Second, "PolicyRefused Event on the NetworkPolicy", "Warning PolicyRefused", func() string { return eventFor(t, cs, "NetworkPolicy", "isolate") })
	evs, _ := cs.CoreV1().Events("web").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=isolate"})
	if len(evs.Items) != 1 || evs.Items[0].Count > 1 || evs.Items[0].InvolvedObject.UID != np.UID {
		t.Fatalf("events %+v: want one, about the object's UID %s", evs.Items, np.UID)
	}

	// The API server goes away and comes back: the informers resume.
	s.StopAPI()
	if err := s.StartAPI(); err != nil {
		t.Fatal(err)
	}
	if err := cs.NetworkingV1().NetworkPolicies("web").Delete(ctx, "isolate", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	create(node("node4", "10.99.4.2", []string{"10.244.4.0/24"}, nil))
	wait.Equal(t, 15*time.Second, "policy deleted after an API server restart", "", polState)
	wait.Equal(t, 15*time.Second, "node added after an API server restart", "10.99.2.2/64512[10.244.2.0/24] 10.99.4.2/64512[10.244.4.0/24] ", peers)
}
