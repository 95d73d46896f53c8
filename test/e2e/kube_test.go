package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/petrelnet/petrel/internal/testkit/kubelab"
	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// TestKubernetesMode runs two real agents in Kubernetes mode against a real
// API server. The API server lives in a management namespace whose bridge
// is the nodes' shared segment; each node's identity, pod CIDR and mesh
// peers come from Node objects.
func TestKubernetesMode(t *testing.T) {
	netnstest.RequireRoot(t)
	mgmt := netnstest.New(t, "mgmt")
	for _, args := range [][]string{
		{"link", "add", "br0", "type", "bridge"}, {"link", "set", "br0", "up"},
		{"addr", "add", "10.98.255.1/24", "dev", "br0"},
	} {
		netnstest.MustIP(t, mgmt, args...)
	}
	api := kubetest.StartIn(t, mgmt, "10.98.255.1")
	cs, err := kubernetes.NewForConfig(api.RestConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// The manifest's CRDs and RBAC; the agents act as its service account.
	if _, err := kubetest.Apply(ctx, api.RestConfig(), filepath.Join(kubetest.RepoRoot(), "manifests", "petrel.yaml")); err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := api.KubeconfigAs(kubelab.AgentUser)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	nodes := map[string]netnstest.NS{}
	var agents []*labtest.Proc
	for i := 1; i <= 2; i++ {
		name, ip := fmt.Sprintf("node%d", i), fmt.Sprintf("10.98.255.1%d", i)
		ns := netnstest.New(t, name)
		nodes[name] = ns
		port := fmt.Sprintf("p%d", i)
		netnstest.MustIP(t, netnstest.NS{}, "link", "add", port, "netns", mgmt.Name, "type", "veth", "peer", "name", "eth0", "netns", ns.Name)
		netnstest.MustIP(t, mgmt, "link", "set", port, "master", "br0")
		netnstest.MustIP(t, mgmt, "link", "set", port, "up")
		netnstest.MustIP(t, ns, "addr", "add", ip+"/24", "dev", "eth0")
		netnstest.MustIP(t, ns, "link", "set", "eth0", "up")
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{PodCIDRs: []string{fmt.Sprintf("10.244.%d.0/24", i)}}}
		created, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: ip}}
		if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		ndir := filepath.Join(dir, name)
		os.MkdirAll(ndir, 0o755)
		conf := fmt.Sprintf("clusterCIDRs: [10.244.0.0/16]\ndataDir: %[1]s/data\ncniConfDir: %[1]s/net.d\ngrpcAddress: unix://%[1]s/run/gobgp.sock\nlogLevel: debug\n", ndir)
		os.WriteFile(filepath.Join(ndir, "config.yaml"), []byte(conf), 0o644)
		p, err := labtest.StartProc(ns, filepath.Join(ndir, "agent.log"), "env", "NODE_NAME="+name,
			filepath.Join(binDir, "petrel-agent"), "--config", filepath.Join(ndir, "config.yaml"), "--kubeconfig", kubeconfig)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Signal(syscall.SIGKILL) })
		agents = append(agents, p)
	}
	routes := func(node string) string {
		out, _ := nodes[node].Run("ip", "route", "show", "proto", "61")
		return strings.Join(strings.Fields(out), " ")
	}
	d, err := wait.For(30*time.Second, "each node learns the other's pod CIDR over the mesh", func() bool {
		return strings.Contains(routes("node1"), "10.244.2.0/24 via 10.98.255.12") && strings.Contains(routes("node2"), "10.244.1.0/24 via 10.98.255.11")
	})
	if err != nil {
		for _, n := range []string{"node1", "node2"} {
			log, _ := os.ReadFile(filepath.Join(dir, n, "agent.log"))
			t.Logf("%s routes: %s\n%s warnings and errors:\n%s", n, routes(n), n, importantLines(string(log)))
		}
		t.Fatal(err)
	}
	t.Logf("agents started -> mesh routes from Node objects: %s", d)
	wait.Until(t, 10*time.Second, "node1 marked NetworkUnavailable=False", func() bool {
		n, err := cs.CoreV1().Nodes().Get(ctx, "node1", metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionFalse {
				return true
			}
		}
		return false
	})
	// Pods: wired by the CNI binary with the agents' conflists; the test
	// plays the kubelet and reports their addresses in the API.
	var pods []labtest.Pod
	for i, node := range []string{"node1", "node2"} {
		name := fmt.Sprintf("pod%d", i+1)
		p, err := labtest.WirePod(nodes[node], filepath.Join(dir, node, "net.d", "10-petrel.conflist"), binDir, name, netnstest.New(t, name))
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
		obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "none"}}}}
		created, err := cs.CoreV1().Pods("default").Create(ctx, obj, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Status.PodIPs = []corev1.PodIP{{IP: p.IP}}
		created.Status.PodIP = p.IP
		if _, err := cs.CoreV1().Pods("default").UpdateStatus(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	reach := func() bool { _, err := pods[0].NS.Run("ping", "-c1", "-W0.3", pods[1].IP); return err == nil }
	wait.Until(t, 10*time.Second, "pod1 reaches pod2 across the mesh", reach)
	np := &netv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "isolate-pod2", Namespace: "default"},
		Spec: netv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "pod2"}}}}
	if _, err := cs.NetworkingV1().NetworkPolicies("default").Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 10*time.Second, "the NetworkPolicy isolates pod2", func() bool { return !reach() })
	t.Logf("NetworkPolicy created in the API -> enforced: %s", d)
	if err := cs.NetworkingV1().NetworkPolicies("default").Delete(ctx, "isolate-pod2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 10*time.Second, "the NetworkPolicy deleted: pod2 reachable", reach)
	t.Logf("NetworkPolicy deleted -> lifted: %s", d)

	// A BGPConfiguration gives the cluster another AS: each agent restarts
	// its speaker (not itself) and the mesh comes back in the new AS.
	gobgp := netnstest.RequireTool(t, "gobgp")
	bgpConf := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "petrel.dev/v1alpha1", "kind": "BGPConfiguration",
		"metadata": map[string]any{"name": "default"}, "spec": map[string]any{"asn": int64(64600)}}}
	dyn := dynamic.NewForConfigOrDie(api.RestConfig())
	if _, err := dyn.Resource(kubelab.BGPConfigs).Create(ctx, bgpConf, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 30*time.Second, "both speakers in AS 64600 and the mesh routes back", func() bool {
		for _, n := range []string{"node1", "node2"} {
			if out, _ := nodes[n].Run(gobgp, "--target", "unix://"+filepath.Join(dir, n, "run", "gobgp.sock"), "global"); !strings.Contains(out, "64600") {
				return false
			}
		}
		return strings.Contains(routes("node1"), "10.244.2.0/24 via 10.98.255.12") && strings.Contains(routes("node2"), "10.244.1.0/24 via 10.98.255.11") && reach()
	})
	t.Logf("BGPConfiguration asn 64600 -> mesh re-established in the new AS: %s", d)
	for _, p := range agents {
		if !p.Running() {
			t.Fatal("an agent exited on the AS change")
		}
	}

	// The API server goes away: the dataplane stays as it is, pods keep
	// talking; when it is back the agents resync and see new objects.
	api.StopAPI()
	before := routes("node1")
	if out, err := pods[0].NS.Run("ping", "-c", "20", "-i", "0.1", "-W", "1", pods[1].IP); err != nil || !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("pings during the API server outage: %v\n%s", err, out)
	}
	if got := routes("node1"); got != before {
		t.Fatalf("routes changed during the outage:\n%s\nwas\n%s", got, before)
	}
	if err := api.StartAPI(); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.NetworkingV1().NetworkPolicies("default").Create(ctx, np.DeepCopy(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 30*time.Second, "a policy created after the outage is enforced", func() bool { return !reach() })
	t.Logf("API server back, policy created -> enforced: %s", d)

	// A Node deleted from the API: its peer goes, and its routes with it.
	if err := cs.CoreV1().Nodes().Delete(ctx, "node2", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 10*time.Second, "node2's routes withdrawn from node1", func() bool {
		return !strings.Contains(routes("node1"), "10.244.2.0/24")
	})
	t.Logf("node2 deleted -> its routes gone from node1: %s", d)
}
