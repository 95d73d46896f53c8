package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/petrelnet/petrel/internal/testkit/kubelab"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// servicesLab is the Kubernetes-mode ToR lab with real Services: the
// EndpointSlice controller, kube-proxy on every node, an address pool,
// and the client behind the ToR routed to the pool through it.
func servicesLab(t *testing.T, nodes int) (*labtest.TorLab, *kubelab.Cluster) {
	netnstest.SkipInUnitTier(t)
	l, c := newKubeTorLab(t, nodes, 1)
	ctx := context.Background()
	if err := c.StartEndpointSlices(); err != nil {
		t.Fatal(err)
	}
	proxies, err := c.StartProxies(l)
	t.Cleanup(func() {
		for _, p := range proxies {
			p.Signal(syscall.SIGTERM)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Apply(ctx, kubelab.LBPools, "lab", map[string]any{"cidrs": []any{"10.250.0.0/24"}}); err != nil {
		t.Fatal(err)
	}
	netnstest.MustIP(t, l.External, "route", "add", "10.250.0.0/24", "via", "10.100.0.1")
	wait.Until(t, 30*time.Second, "FRR sees every node session Established", func() bool { ok, _ := l.Established(); return ok })
	return l, c
}

// serve runs labtest.Serve in a pod for the test's duration.
func serve(t *testing.T, p labtest.Pod, port int) {
	stop, err := labtest.Serve(p, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
}

func lbService(name string, policy corev1.ServiceExternalTrafficPolicy) *corev1.Service {
	single := corev1.IPFamilyPolicySingleStack
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: policy, IPFamilyPolicy: &single,
			Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{
				{Name: "tcp", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
				{Name: "udp", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolUDP},
			}}}
}

// TestLoadBalancerServiceFromOutside: a LoadBalancer Service gets an
// address from the pool; the ToR routes it via exactly the nodes with a
// ready endpoint (Local) or via every node (Cluster); a client behind the
// ToR gets answers through kube-proxy; the route follows readiness, and
// how fast is printed.
func TestLoadBalancerServiceFromOutside(t *testing.T) {
	l, c := servicesLab(t, 3)
	ctx := context.Background()
	var pods []labtest.Pod
	for i, n := range l.Nodes {
		p, err := c.AddPod(ctx, l, n, fmt.Sprintf("web-%d", i+1), map[string]string{"app": "web"})
		if err != nil {
			t.Fatal(err)
		}
		serve(t, p, 8080)
		pods = append(pods, p)
	}
	for _, p := range pods[:2] {
		if err := c.SetPodReady(ctx, p.Name, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetPodReady(ctx, pods[2].Name, false); err != nil {
		t.Fatal(err)
	}
	created := time.Now()
	if _, err := c.CS.CoreV1().Services("default").Create(ctx, lbService("web", corev1.ServiceExternalTrafficPolicyLocal), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var lb string
	wait.Until(t, 20*time.Second, "the Service gets an address from the pool", func() bool {
		s, err := c.CS.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
			lb = s.Status.LoadBalancer.Ingress[0].IP
		}
		return lb != ""
	})
	host := lb + "/32"
	n1, n2, n3 := l.Nodes[0].Addr(), l.Nodes[1].Addr(), l.Nodes[2].Addr()
	wait.Equal(t, 20*time.Second, "Local: the ToR routes "+host+" via the two nodes with ready endpoints", n1+" "+n2, func() string { return l.FRR.NextHops(host) })
	t.Logf("Service created -> %s at the ToR via %s and %s: %s", host, n1, n2, time.Since(created).Round(time.Millisecond))
	addr := net.JoinHostPort(lb, "80")
	d := wait.Until(t, 10*time.Second, "the client behind the ToR answered through kube-proxy", func() bool {
		got, err := labtest.Fetch(l.External, addr)
		return err == nil && (got == "web-1" || got == "web-2")
	})
	t.Logf("-> the client's first answer: %s after the route (kube-proxy's own sync)", d)
	for range 5 {
		got, err := labtest.Fetch(l.External, addr)
		if err != nil || (got != "web-1" && got != "web-2") {
			t.Fatalf("client behind the ToR -> %s: %q %v, want web-1 or web-2", addr, got, err)
		}
	}

	// The last endpoint on node1 turns unready: node1 withdraws.
	if err := c.SetPodReady(ctx, "web-1", false); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 10*time.Second, "node1 withdrawn at the ToR", func() bool { return l.FRR.NextHops(host) == n2 })
	t.Logf("last endpoint on node1 unready -> node1 withdrawn at the ToR: %s", d)

	// The endpoint moves: web-2 unready, web-3 (node3) ready. New
	// connections follow.
	if err := c.SetPodReady(ctx, "web-2", false); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 10*time.Second, "no ready endpoint: no route at the ToR", "", func() string { return l.FRR.NextHops(host) })
	if err := c.SetPodReady(ctx, "web-3", true); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 10*time.Second, "the client's new connections reach web-3 on node3", func() bool {
		got, err := labtest.Fetch(l.External, addr)
		return err == nil && got == "web-3"
	})
	t.Logf("endpoint moved to node3 -> the client's new connections answered there: %s (ToR: via %s)", d, l.FRR.NextHops(host))
	if hops := l.FRR.NextHops(host); hops != n3 {
		t.Fatalf("ToR next hops %q, want node3's %s only", hops, n3)
	}

	// Cluster: every node announces; the ToR spreads over all three.
	s, err := c.CS.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	if _, err := c.CS.CoreV1().Services("default").Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 10*time.Second, "Cluster: the ToR routes via every node", n1+" "+n2+" "+n3, func() string { return l.FRR.NextHops(host) })
	// kube-proxy on node1 and node2 switches the Service to Cluster at its
	// own next sync (up to a second): until then a connection the ToR
	// sends there is dropped. Petrel announces at once.
	d = wait.Until(t, 10*time.Second, "Cluster: the client answered by web-3 (the only ready endpoint), three times in a row", func() bool {
		for range 3 {
			if got, err := labtest.Fetch(l.External, addr); err != nil || got != "web-3" {
				return false
			}
		}
		return true
	})
	t.Logf("Cluster: every node a next hop -> the client answered: %s", d)
	if got := lastLines(mustRun(t, l.Nodes[0].NS, "nft", "list", "tables"), 10); !strings.Contains(got, "kube-proxy") || !strings.Contains(got, "petrel") {
		t.Fatalf("node1's nftables: %s, want kube-proxy's and Petrel's tables side by side", got)
	}
}

func mustRun(t *testing.T, ns netnstest.NS, name string, args ...string) string {
	t.Helper()
	out, err := ns.Run(name, args...)
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return out
}
