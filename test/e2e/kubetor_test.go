package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/petrelnet/petrel/internal/testkit/kubelab"
	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// newKubeTorLab is topology (a) in Kubernetes mode (or (b) with tors=2):
// the FRR ToR, the nodes, the real API server on the management network, the manifest
// applied, Nodes and BGPPeers created, and the agents running as the
// agent's service account.
func newKubeTorLab(t *testing.T, nodes, tors int) (*labtest.TorLab, *kubelab.Cluster) {
	netnstest.RequireRoot(t)
	netnstest.RequireTool(t, labtest.FRRDir+"/bgpd")
	l, err := labtest.NewKubeTorLab(t.TempDir(), filepath.Join(binDir, "petrel-agent"), binDir, nodes, tors)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	api := kubetest.StartIn(t, l.Mgmt, labtest.MgmtHost)
	ctx := context.Background()
	c, err := kubelab.Connect(ctx, api, l)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RegisterNodes(ctx, l); err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes {
		if err := l.StartAgent(n); err != nil {
			t.Fatal(err)
		}
	}
	return l, c
}

// TestKubernetesToR: the ToR lab with everything from the API server —
// node identity and pod CIDRs from Node objects, the ToR sessions from
// BGPPeers, pods and NetworkPolicies through the API.
func TestKubernetesToR(t *testing.T) {
	l, c := newKubeTorLab(t, 3, 1)
	ctx := context.Background()
	gobgp := netnstest.RequireTool(t, "gobgp")
	d := wait.Until(t, 30*time.Second, "FRR sees every node session (v4 and v6) Established", func() bool { ok, _ := l.Established(); return ok })
	t.Logf("agents started -> sessions Established: %s", d)
	d = wantRoutes(t, l, 20*time.Second)
	t.Logf("-> pod CIDR routes on every node: %s", d)

	var pods []labtest.Pod
	for i, n := range l.Nodes {
		name := fmt.Sprintf("pod%d", i+1)
		p, err := c.AddPod(ctx, l, n, name, map[string]string{"app": name})
		if err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	// The full matrix, IPv4 and IPv6, pod to pod and node to pod.
	for i, from := range pods {
		for j, to := range pods {
			if i != j {
				ping(t, from.NS, to.IP)
				ping(t, from.NS, to.IP6)
			}
		}
		for _, n := range l.Nodes {
			ping(t, n.NS, from.IP)
		}
	}
	// Leaving the cluster, a pod is masqueraded to its node's address.
	if got := labtest.SeenAs(t, l.External, pods[0], "10.100.0.2:7000"); got != l.Nodes[0].Addr() {
		t.Fatalf("the external host saw pod1 as %s, want node1's %s", got, l.Nodes[0].Addr())
	}
	// The stock gobgp CLI inside a node.
	n1 := l.Nodes[0]
	if out, err := n1.NS.Run(gobgp, n1.GoBGP("neighbor")...); err != nil || !strings.Contains(out, n1.TorAddr()) || !strings.Contains(out, "Establ") {
		t.Fatalf("gobgp neighbor: %v\n%s", err, out)
	}
	if out, err := n1.NS.Run(gobgp, n1.GoBGP("global", "rib")...); err != nil || !strings.Contains(out, l.Nodes[2].PodNet) {
		t.Fatalf("gobgp global rib: %v\n%s", err, out)
	}
	wait.Until(t, 10*time.Second, "a BGPSessionEstablished Event on node1", func() bool {
		evs, err := c.CS.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Node,involvedObject.name=node1,reason=BGPSessionEstablished"})
		return err == nil && len(evs.Items) > 0
	})

	// A NetworkPolicy through the API isolates pod2 from the pods on the
	// other nodes; deleting it lets them in again.
	reach := func(from labtest.Pod) bool {
		_, err := from.NS.Run("ping", "-c1", "-W0.2", pods[1].IP)
		return err == nil
	}
	np := &netv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "isolate-pod2", Namespace: "default"},
		Spec: netv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "pod2"}}}}
	if _, err := c.CS.NetworkingV1().NetworkPolicies("default").Create(ctx, np, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 5*time.Second, "pod1 and pod3 blocked from pod2", func() bool { return !reach(pods[0]) && !reach(pods[2]) })
	t.Logf("NetworkPolicy created in the API -> enforced across nodes: %s", d)
	// Updated to admit pods labelled role=client, then pod1 relabelled:
	// pod1 gets in, pod3 stays out.
	nps := c.CS.NetworkingV1().NetworkPolicies("default")
	cur, err := nps.Get(ctx, np.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cur.Spec.Ingress = []netv1.NetworkPolicyIngressRule{{From: []netv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"role": "client"}}}}}}
	if _, err := nps.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // long enough for a wrong update to show
	if reach(pods[0]) || reach(pods[2]) {
		t.Fatal("an allow rule for role=client let unlabelled pods in")
	}
	pod1, err := c.CS.CoreV1().Pods("default").Get(ctx, "pod1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod1.Labels["role"] = "client"
	if _, err := c.CS.CoreV1().Pods("default").Update(ctx, pod1, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 5*time.Second, "pod1 relabelled role=client reaches pod2", func() bool { return reach(pods[0]) })
	t.Logf("pod1 relabelled in the API -> admitted on node2: %s", d)
	if reach(pods[2]) {
		t.Fatal("pod3 (no role=client label) reaches pod2")
	}
	if err := nps.Delete(ctx, np.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 5*time.Second, "pod1 and pod3 reach pod2 again", func() bool { return reach(pods[0]) && reach(pods[2]) })
	t.Logf("NetworkPolicy deleted -> allowed again: %s", d)

	// kill -9 and restart node1's agent under a 100-per-second ping
	// stream from pod1 to pod2: not one packet lost.
	stream := make(chan string, 1)
	go func() {
		out, _ := pods[0].NS.Run("ping", "-c", "500", "-i", "0.01", "-W", "1", pods[1].IP)
		stream <- out
	}()
	time.Sleep(500 * time.Millisecond)
	if err := n1.Agent.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := n1.Agent.Start(); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 20*time.Second, "sessions back after the agent restart", func() bool { ok, _ := l.Established(); return ok })
	t.Logf("agent restart under traffic -> Established: %s", d)
	if out := <-stream; !strings.Contains(out, "500 received") {
		t.Fatalf("packets lost across the agent restart:\n%s", out)
	}

	// A BGPPeer deleted and created again: the agent (the same process)
	// drops and restores the session.
	pid := n1.Agent.Cmd.Process.Pid
	if err := c.Dyn.Resource(kubelab.BGPPeers).Delete(ctx, "tor-node1-v4", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "node1's v4 ToR session gone", func() bool {
		out, _ := n1.NS.Run(gobgp, n1.GoBGP("neighbor")...)
		return !strings.Contains(out, n1.TorAddr()+" ")
	})
	if err := c.RegisterPeer(ctx, n1, "v4"); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 20*time.Second, "node1's v4 ToR session back", func() bool { ok, _ := l.Established(); return ok })
	t.Logf("BGPPeer created -> Established: %s", d)
	if !n1.Agent.Running() || n1.Agent.Cmd.Process.Pid != pid {
		t.Fatal("the agent restarted")
	}

	// node3 deleted from the API: its pod CIDRs are withdrawn everywhere
	// (the controller-manager may give them to another node).
	if err := c.CS.CoreV1().Nodes().Delete(ctx, "node3", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 10*time.Second, "node3's routes gone from node1 and node2", func() bool {
		return !strings.Contains(petrelRoutes(t, l.Nodes[0]), l.Nodes[2].PodNet) && !strings.Contains(petrelRoutes(t, l.Nodes[1]), l.Nodes[2].PodNet)
	})
	t.Logf("node3 deleted -> its routes withdrawn: %s", d)
}

// TestKubernetesDualToRWithBFD is topology (b) in Kubernetes mode: every
// node dual-homed, sessions from BGPPeers with BFD. One ToR fails
// silently (drops everything: no reset, no link change); BFD takes its
// next hop away long before the 9 s hold time, and traffic carries on
// through the other ToR.
func TestKubernetesDualToRWithBFD(t *testing.T) {
	l, c := newKubeTorLab(t, 2, 2)
	ctx := context.Background()
	n1, n2 := l.Nodes[0], l.Nodes[1]
	d := wait.Until(t, 30*time.Second, "both ToRs see every session Established", func() bool { ok, _ := l.Established(); return ok })
	t.Logf("agents started -> sessions with both ToRs Established: %s", d)
	routeOn := func(n, to *labtest.Node) string {
		out, _ := n.NS.Run("ip", "route", "show", to.PodNet, "proto", "61")
		return strings.Join(strings.Fields(out), " ")
	}
	route := func() string { return routeOn(n1, n2) }
	d = wait.Until(t, 20*time.Second, "node1's ECMP route to node2's pods via both ToRs", func() bool {
		r := route()
		return strings.Contains(r, "via "+n1.TorAddr()) && strings.Contains(r, "via "+n1.Tor2Addr())
	})
	t.Logf("-> ECMP route via both ToRs: %s (%s)", d, route())
	// BFD acts only on sessions that were up: wait for both nodes'.
	wait.Until(t, 15*time.Second, "BFD up between tor2 and both nodes", func() bool {
		return labtest.BFDUp(l.FRR2, n1.Addr2()) && labtest.BFDUp(l.FRR2, n2.Addr2())
	})
	p1, err := c.AddPod(ctx, l, n1, "pod1", nil)
	if err != nil {
		t.Fatal(err)
	}
	p2, err := c.AddPod(ctx, l, n2, "pod2", nil)
	if err != nil {
		t.Fatal(err)
	}
	ping(t, p1.NS, p2.IP)

	stream := make(chan string, 1)
	go func() {
		out, _ := p1.NS.Run("ping", "-c", "300", "-i", "0.01", "-W", "1", p2.IP)
		stream <- out
	}()
	time.Sleep(500 * time.Millisecond)
	drop := [][]string{
		{"add", "table", "inet", "blackout"},
		{"add", "chain", "inet", "blackout", "c_in", "{ type filter hook input priority -500; policy drop; }"},
		{"add", "chain", "inet", "blackout", "c_fwd", "{ type filter hook forward priority -500; policy drop; }"},
		{"add", "chain", "inet", "blackout", "c_out", "{ type filter hook output priority -500; policy drop; }"},
	}
	for _, args := range drop {
		if out, err := l.Tor2.Run("nft", args...); err != nil {
			t.Fatalf("silence tor2: nft %v: %v %s", args, err, out)
		}
	}
	silenced := time.Now()
	wait.Until(t, 3*time.Second, "tor2's next hops gone on both nodes (the BGP hold time is 9 s)", func() bool {
		r1, r2 := route(), routeOn(n2, n1)
		return strings.Contains(r1, "via "+n1.TorAddr()) && !strings.Contains(r1, n1.Tor2Addr()) &&
			strings.Contains(r2, "via "+n2.TorAddr()) && !strings.Contains(r2, n2.Tor2Addr())
	})
	t.Logf("tor2 silenced -> its next hops removed on both nodes (BFD): %s", time.Since(silenced))
	wait.Until(t, 10*time.Second, "a BGPSessionDown Event on node1", func() bool {
		evs, err := c.CS.CoreV1().Events("").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Node,involvedObject.name=node1,reason=BGPSessionDown"})
		return err == nil && len(evs.Items) > 0
	})
	out := <-stream
	t.Logf("pod1 -> pod2 during the failover, one ping per 10 ms: %s", lastLines(out, 2))
	ping(t, p1.NS, p2.IP)
	ping(t, p2.NS, p1.IP)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}
