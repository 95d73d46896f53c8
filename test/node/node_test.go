package node

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/realnode"
)

// debian is the older node: Debian's containerd 1.6 and reference plugins.
var debian = realnode.Runtime{Name: "containerd 1.6 (Debian)", Containerd: "/usr/bin/containerd", Ctr: "/usr/bin/ctr"}

// ContainerdV2 is the current runtime test/setup.sh builds from the Go
// module proxy.
const ContainerdV2 = "v2.2.9"

// TestRealNodeContainerd16: the older node, with Debian's reference
// plugins already in /opt/cni/bin (portmap 1.1.1: kept, it reads the
// conflist's version).
func TestRealNodeContainerd16(t *testing.T) {
	c := newCluster(t, debian, "/usr/lib/cni")
	c.run(t)
}

// TestRealNodeContainerd2: a current node with no plugins of its own: the
// init container installs the image's portmap and loopback.
func TestRealNodeContainerd2(t *testing.T) {
	dir := filepath.Join(kubetest.RepoRoot(), ".tools", "containerd-"+ContainerdV2)
	need(t, filepath.Join(dir, "containerd"), "run test/setup.sh")
	c := newCluster(t, realnode.Runtime{Name: "containerd " + ContainerdV2, Containerd: filepath.Join(dir, "containerd"),
		Ctr: filepath.Join(dir, "ctr"), V2: true, ShimDir: dir}, "")
	c.run(t)
}

// run is the real node's checks, in order: each builds on the pods the
// ones before created.
func (c *cluster) run(t *testing.T) {
	ctx := context.Background()
	if _, err := c.c.CS.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	node, err := c.c.CS.CoreV1().Nodes().Get(ctx, c.real.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(node.Spec.PodCIDRs) != 2 {
		t.Fatalf("the real node's pod CIDRs %v: want one IPv4 and one IPv6 (dual-stack --cluster-cidr)", node.Spec.PodCIDRs)
	}

	// Pods on the real node: addresses from its pod CIDRs, both families.
	start := time.Now()
	pods := c.createPods(2*time.Minute,
		c.netcheckPod("a", map[string]string{"role": "client"}),
		c.netcheckPod("b", map[string]string{"role": "server"}))
	t.Logf("two pods created -> Ready: %s", time.Since(start).Round(time.Millisecond))
	a4, a6 := ips(pods[0])
	b4, b6 := ips(pods[1])
	for _, ip := range []string{a4, a6, b4, b6} {
		if !inCIDRs(ip, node.Spec.PodCIDRs) {
			t.Fatalf("pod address %s is not in the node's pod CIDRs %v", ip, node.Spec.PodCIDRs)
		}
	}
	if a4 == "" || a6 == "" || b4 == "" || b6 == "" {
		t.Fatalf("pods a %v, b %v: want an IPv4 and an IPv6 address each", pods[0].Status.PodIPs, pods[1].Status.PodIPs)
	}

	// Node to pod, and pod to pod on the node, both families.
	for _, to := range [][2]string{{a4, "a"}, {a6, "a"}, {b4, "b"}, {b6, "b"}} {
		if got, err := get(c.real.NS, hostPort(to[0], 8080), "/"); err != nil || got != to[1] {
			t.Errorf("node -> pod %s: %q, %v", to[0], got, err)
		}
	}
	for _, p := range [][2]string{{a4, b4}, {a6, b6}} {
		if got, err := c.dial(p[0], hostPort(p[1], 8080)); err != nil || got != "b" {
			t.Errorf("pod a -> pod b (%s): %q, %v", p[1], got, err)
		}
	}

	// Across the ToR: a played node's pod and a real pod, both ways.
	lab1, err := c.c.AddPod(ctx, c.lab, c.lab.Nodes[0], "lab1", map[string]string{"role": "lab"})
	if err != nil {
		t.Fatal(err)
	}
	c.serve(lab1.NS)
	host, _ := os.Hostname()
	c.waitFor(30*time.Second, "pod a -> lab1 across the ToR (v4 and v6)", func() (bool, string) {
		for _, to := range []string{lab1.IP, lab1.IP6} {
			if got, err := c.dial(a4, hostPort(to, 8080)); err != nil || got != host {
				return false, got + " " + errString(err)
			}
		}
		return true, ""
	})
	for _, to := range []string{a4, a6} {
		if got, err := get(lab1.NS, hostPort(to, 8080), "/"); err != nil || got != "a" {
			t.Errorf("lab1 -> pod a %s across the ToR: %q, %v", to, got, err)
		}
	}

	// hostPort: the chained portmap (the node's own, Debian's) maps the
	// node's port 18080 to the pod.
	hp := c.netcheckPod("hp", map[string]string{"role": "hostport"})
	hp.Spec.Containers[0].Ports[0].HostPort = 18080
	c.createPods(time.Minute, hp)
	for _, addr := range []string{c.real.Addr(), c.real.Addr6()} {
		if got, err := get(c.lab.Nodes[0].NS, hostPort(addr, 18080), "/"); err != nil || got != "hp" {
			t.Errorf("node1 -> %s:18080 (hostPort): %q, %v", addr, got, err)
		}
	}

	// A ClusterIP Service through kube-proxy (nftables) beside Petrel's table.
	svc, err := c.c.CS.CoreV1().Services(testNS).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "server"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"role": "server"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.waitFor(30*time.Second, "pod a -> ClusterIP "+svc.Spec.ClusterIP, func() (bool, string) {
		got, err := c.dial(a4, hostPort(svc.Spec.ClusterIP, 80))
		return err == nil && got == "b", got + " " + errString(err)
	})

	lb := c.checkLoadBalancer(t)
	c.checkPolicy(t, a4, b4, lab1)
	c.checkAgentRollout(t, lab1, a4, a6, lb)
	c.checkChurn(t, 50)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return strings.TrimSpace(err.Error())
}
