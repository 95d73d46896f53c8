package kube

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/petrelnet/petrel/bgp"
	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// asAgent is a client config acting as the manifest's service account.
func asAgent(s *kubetest.Server) *rest.Config {
	cfg := s.RestConfig()
	cfg.Impersonate.UserName = agentSA
	cfg.Impersonate.Groups = []string{"system:serviceaccounts", "system:serviceaccounts:petrel-system", "system:authenticated"}
	return cfg
}

// agentLB starts what one agent runs for LoadBalancer addresses: the
// informers and the election, as the agent's service account.
func agentLB(t *testing.T, ctx context.Context, s *kubetest.Server, nodeName string) *kubeSource {
	t.Helper()
	cfg := asAgent(s)
	c := agentClient(t, cfg)
	k := newKubeSource(c, nodeName, "petrel-system", func() {})
	if err := k.start(ctx); err != nil {
		t.Fatal(err)
	}
	rep, stop := newReporter(c, nodeName)
	go func() { <-ctx.Done(); stop() }()
	go runLBElection(ctx, &lbController{c: c, k: k, events: rep.events, log: testLog(t)}, nodeName, "petrel-system")
	return k
}

func lbService(name string, fams corev1.IPFamilyPolicy, policy corev1.ServiceExternalTrafficPolicy, ann map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: ann},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, IPFamilyPolicy: &fams, ExternalTrafficPolicy: policy,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}}}}
}

func ingressOf(cs kubernetes.Interface, name string) string {
	s, err := cs.CoreV1().Services("default").Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		out = append(out, in.IP)
	}
	return strings.Join(out, ",")
}

// TestLoadBalancerAddresses: two agents, as the manifest's service
// account, against a real API server. One holds the lease and assigns
// addresses from a pool (dual-stack too); a full pool gives a Warning
// Event; the other agent takes over when the first stops, changes nothing
// that was assigned, and goes on assigning; a deleted pool takes its
// addresses back with a Warning.
func TestLoadBalancerAddresses(t *testing.T) {
	s := kubetest.Start(t)
	admin := clientFor(t, s)
	adminDyn := dynamic.NewForConfigOrDie(s.RestConfig())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	applyManifest(t, s)
	saved := lbLease
	lbLease.duration, lbLease.renew, lbLease.retry = 3*time.Second, 2*time.Second, 200*time.Millisecond
	t.Cleanup(func() { lbLease = saved })
	// node4's agent is not a candidate (node1-3 come first): it never
	// assigns, even when the leader stops.
	for _, n := range []string{"node3", "node4"} {
		createNode(t, admin, node(n, "10.99.1.2", []string{"10.244.1.0/24"}, nil))
	}
	agents := map[string]context.CancelFunc{}
	for _, n := range []string{"node1", "node2", "node4"} {
		if n != "node4" {
			createNode(t, admin, node(n, "10.99.1.2", []string{"10.244.1.0/24"}, nil))
		}
		actx, stop := context.WithCancel(ctx)
		agents[n] = stop
		wait.Equal(t, 15*time.Second, "CRDs served to the agent", "", func() string {
			if err := checkAccess(ctx, dynamic.NewForConfigOrDie(asAgent(s)), "petrel-system"); err != nil {
				return err.Error()
			}
			return ""
		})
		agentLB(t, actx, s, n)
	}
	if _, err := adminDyn.Resource(lbPoolsGVR).Create(ctx, object("LoadBalancerIPPool", "blue",
		map[string]any{"cidrs": []any{"10.250.0.0/30", "fd00:250::/126"}}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svcs := admin.CoreV1().Services("default")
	for _, svc := range []*corev1.Service{
		lbService("a", corev1.IPFamilyPolicySingleStack, corev1.ServiceExternalTrafficPolicyCluster, nil),
		lbService("b", corev1.IPFamilyPolicyRequireDualStack, corev1.ServiceExternalTrafficPolicyLocal, nil),
	} {
		if _, err := svcs.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond) // creation times a second apart: the older keeps a contested address
	}
	wait.Equal(t, 20*time.Second, "a and b get addresses", "10.250.0.1 | 10.250.0.2,fd00:250::", func() string {
		return ingressOf(admin, "a") + " | " + ingressOf(admin, "b")
	})
	if _, err := svcs.Create(ctx, lbService("c", corev1.IPFamilyPolicySingleStack, corev1.ServiceExternalTrafficPolicyCluster, nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 10*time.Second, "c: a Warning, the pool is full", "Warning AllocationFailed", func() string { return eventFor(t, admin, "Service", "c") })
	wait.Equal(t, 10*time.Second, "pool status", "True Valid addresses assigned from this pool assigned=3 free=3", func() string { return poolStatusOf(t, adminDyn, "blue") })
	ipEvents := func() int {
		evs, _ := admin.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=a,reason=IPAllocated"})
		return len(evs.Items)
	}
	if n := ipEvents(); n != 1 {
		t.Fatalf("%d IPAllocated Events for a: exactly one agent assigns", n)
	}

	// The leader stops: the other takes over at once (the lease is
	// released), keeps every assignment, and assigns again.
	lease, err := admin.CoordinationV1().Leases("petrel-system").Get(ctx, LBLease, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	leader := *lease.Spec.HolderIdentity
	other := map[string]string{"node1": "node2", "node2": "node1"}[leader]
	if other == "" {
		t.Fatalf("the lease is held by %q, not a candidate (node1 or node2)", leader)
	}
	before := map[string]string{}
	for _, n := range []string{"a", "b"} {
		got, _ := svcs.Get(ctx, n, metav1.GetOptions{})
		before[n] = got.ResourceVersion
	}
	agents[leader]()
	start := time.Now()
	wait.Until(t, 10*time.Second, "the other candidate holds the lease", func() bool {
		l, err := admin.CoordinationV1().Leases("petrel-system").Get(ctx, LBLease, metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == other
	})
	t.Logf("leader %s stopped -> the other agent assigning: %s", leader, time.Since(start).Round(time.Millisecond))
	if err := svcs.Delete(ctx, "a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 10*time.Second, "c gets a's address from the new leader", "10.250.0.1", func() string { return ingressOf(admin, "c") })
	if got, _ := svcs.Get(ctx, "b", metav1.GetOptions{}); got.ResourceVersion != before["b"] {
		t.Fatalf("the new leader rewrote b: %v", got.Status.LoadBalancer)
	}

	// The pool deleted: its addresses go, with a Warning.
	if err := adminDyn.Resource(lbPoolsGVR).Delete(ctx, "blue", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 10*time.Second, "b and c lose their addresses", " | ", func() string { return ingressOf(admin, "b") + " | " + ingressOf(admin, "c") })
	wait.Until(t, 10*time.Second, "b: a Warning", func() bool { return hasEvent(admin, "b", "Warning AllocationFailed") })
}

func poolStatusOf(t *testing.T, dyn dynamic.Interface, name string) string {
	u, err := dyn.Resource(lbPoolsGVR).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	st, _ := u.Object["status"].(map[string]any)
	return fmt.Sprintf("%s assigned=%v free=%v", accepted(t, dyn, "loadbalancerippools", name), st["assigned"], st["free"])
}

// TestServiceAnnouncements: which node announces what. With policy Local
// only the node with a ready, not terminating endpoint; with Cluster every
// node; external IPs and the service CIDRs when asked; every node the same
// scope.
func TestServiceAnnouncements(t *testing.T) {
	s := kubetest.Start(t)
	admin := clientFor(t, s)
	adminDyn := dynamic.NewForConfigOrDie(s.RestConfig())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	applyManifest(t, s)
	createNode(t, admin, node("node1", "10.99.1.2", []string{"10.244.1.0/24"}, nil))
	createNode(t, admin, node("node2", "10.99.2.2", []string{"10.244.2.0/24"}, nil))
	k1 := agentLB(t, ctx, s, "node1")
	k2 := startSource(t, ctx, s, "node2")
	if _, err := adminDyn.Resource(lbPoolsGVR).Create(ctx, object("LoadBalancerIPPool", "blue",
		map[string]any{"cidrs": []any{"10.250.0.0/24"}}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svcs := admin.CoreV1().Services("default")
	local := lbService("local", corev1.IPFamilyPolicySingleStack, corev1.ServiceExternalTrafficPolicyLocal, map[string]string{LBIPsAnnotation: "10.250.0.10"})
	cluster := lbService("cluster", corev1.IPFamilyPolicySingleStack, corev1.ServiceExternalTrafficPolicyCluster, map[string]string{LBIPsAnnotation: "10.250.0.20"})
	cluster.Spec.ExternalIPs = []string{"192.0.2.7"}
	for _, svc := range []*corev1.Service{local, cluster} {
		if _, err := svcs.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	view := func(k *kubeSource) string {
		v, err := k.view(0)
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("mine=%v scope=%v", v.services.mine, v.services.scope)
	}
	wait.Equal(t, 20*time.Second, "node1: the Cluster Service only (no endpoints for the Local one)", "mine=[10.250.0.20/32] scope=[10.250.0.0/24]", func() string { return view(k1) })
	wait.Equal(t, 5*time.Second, "node2 the same", "mine=[10.250.0.20/32] scope=[10.250.0.0/24]", func() string { return view(k2) })

	// A ready endpoint on node2: node2 announces the Local Service too.
	yes, no := true, false
	node2 := "node2"
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: "local-1", Namespace: "default",
		Labels: map[string]string{discoveryv1.LabelServiceName: "local"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"10.244.2.5"}, NodeName: &node2, Conditions: discoveryv1.EndpointConditions{Ready: &yes}}}}
	eps := admin.DiscoveryV1().EndpointSlices("default")
	created, err := eps.Create(ctx, es, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 5*time.Second, "node2 announces the Local Service", "mine=[10.250.0.10/32 10.250.0.20/32] scope=[10.250.0.0/24]", func() string { return view(k2) })
	if got := view(k1); got != "mine=[10.250.0.20/32] scope=[10.250.0.0/24]" {
		t.Fatalf("node1 (no endpoint) announces %s", got)
	}
	// Terminating (still serving): withdrawn.
	created.Endpoints[0].Conditions = discoveryv1.EndpointConditions{Ready: &no, Serving: &yes, Terminating: &yes}
	if _, err := eps.Update(ctx, created, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 5*time.Second, "node2 withdraws the Local Service", "mine=[10.250.0.20/32] scope=[10.250.0.0/24]", func() string { return view(k2) })

	// External IPs and the service CIDRs, on the nodes labelled for it.
	if err := applyConfig(ctx, adminDyn, map[string]any{"serviceAdvertisement": map[string]any{
		"externalIPs": true, "clusterIPs": true, "serviceCIDRs": []any{"10.96.0.0/16"},
		"nodeSelector": map[string]any{"matchLabels": map[string]any{"announce": "yes"}}}}); err != nil {
		t.Fatal(err)
	}
	n1, _ := admin.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
	n1.Labels = map[string]string{"announce": "yes"}
	if _, err := admin.CoreV1().Nodes().Update(ctx, n1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	scope := "scope=[10.96.0.0/16 10.250.0.0/24 192.0.2.7/32]"
	wait.Equal(t, 5*time.Second, "node1 (selected) announces all three kinds", "mine=[10.96.0.0/16 10.250.0.20/32 192.0.2.7/32] "+scope, func() string { return view(k1) })
	wait.Equal(t, 5*time.Second, "node2 (not selected) nothing, same scope", "mine=[] "+scope, func() string { return view(k2) })

	// A router that gets Service addresses only; the mesh session may
	// carry Service addresses from the other node.
	if _, err := adminDyn.Resource(bgpPeersGVR).Create(ctx, object("BGPPeer", "lb-router", map[string]any{"peerAddress": "10.99.0.1", "peerASN": int64(65000),
		"advertise": map[string]any{"podCIDRs": false}}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 5*time.Second, "node1's sessions", "10.99.2.2 services-in | 10.99.0.1 withhold={PodCIDRs:true Services:false} | ", func() string {
		v, _ := k1.view(0)
		out := ""
		for _, p := range v.peers {
			out += p.Address.String()
			if p.AcceptServices {
				out += " services-in"
			}
			if p.Withhold != (bgp.Withhold{}) {
				out += fmt.Sprintf(" withhold=%+v", p.Withhold)
			}
			out += " | "
		}
		return out
	})
}

func applyConfig(ctx context.Context, dyn dynamic.Interface, spec map[string]any) error {
	_, err := dyn.Resource(bgpConfigsGVR).Create(ctx, object("BGPConfiguration", DefaultBGPConfiguration, spec), metav1.CreateOptions{})
	return err
}

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// hasEvent reports whether a Service has an Event of this type and reason.
func hasEvent(cs kubernetes.Interface, name, typeReason string) bool {
	evs, err := cs.CoreV1().Events("").List(context.Background(), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=Service,involvedObject.name=" + name})
	if err != nil {
		return false
	}
	for _, e := range evs.Items {
		if e.Type+" "+e.Reason == typeReason {
			return true
		}
	}
	return false
}
