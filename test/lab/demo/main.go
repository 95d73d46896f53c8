// Command demo is `make demo`: an FRR top-of-rack router and three nodes
// running petrel-agent in Kubernetes mode in network namespaces, a real
// kube-apiserver on the lab's management network, a pod on each node
// created in the API and wired by the CNI plugin, and a report of what
// happened: BGP sessions, routes, a ping matrix, a NetworkPolicy blocking
// then allowing, a LoadBalancer Service reached from outside through a real
// kube-proxy, a node drained under traffic, and the convergence times
// measured. It exits non-zero if
// any check fails.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	netv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/petrelnet/petrel/internal/testkit/kubelab"
	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

type demo struct {
	lab  *labtest.TorLab
	api  *kubetest.Server
	kube *kubelab.Cluster
	pods []labtest.Pod
	// agentsStarted is when the agents were started, after the API server.
	agentsStarted time.Time
	failed        []string
	times         [][2]string
	proxies       []*labtest.Proc // kube-proxy on each node
	stops         []func()        // the pods' servers
}

func main() { os.Exit(run()) }

func run() int {
	agent := flag.String("agent", "bin/petrel-agent", "petrel-agent binary")
	plugin := flag.String("cni", "bin/petrel-cni", "petrel CNI binary")
	nodes := flag.Int("nodes", 3, "nodes")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "demo: needs root (network namespaces)")
		return 2
	}
	keep := os.Getenv("PETREL_DEMO_KEEP") != ""
	dir, err := os.MkdirTemp("", "petrel-demo")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cniDir := filepath.Join(dir, "cni")
	os.MkdirAll(cniDir, 0o755)
	if b, err := os.ReadFile(*plugin); err != nil || os.WriteFile(filepath.Join(cniDir, "petrel"), b, 0o755) != nil {
		fmt.Fprintln(os.Stderr, "demo: cannot install the CNI plugin:", err)
		return 1
	}
	agentBin, _ := filepath.Abs(*agent)
	section("Building the lab: FRR top-of-rack router (AS 65000), %d nodes (AS 65101-%d), eBGP; kube-apiserver on a management network", *nodes, 65100+*nodes)
	start := time.Now()
	lab, err := labtest.NewKubeTorLab(dir, agentBin, cniDir, *nodes, 1)
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	d := &demo{lab: lab}
	if keep {
		defer d.explain(dir)
	} else {
		defer func() {
			d.stopServices()
			if d.api != nil {
				d.api.Stop()
			}
			lab.Close()
			os.RemoveAll(dir)
		}()
	}
	if err := d.cluster(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		return 1
	}
	d.bgp(start)
	d.clusterView()
	d.podsAndPings()
	d.policy()
	d.services()
	section("Summary")
	for _, t := range d.times {
		fmt.Printf("  %-62s %s\n", t[0], t[1])
	}
	if len(d.failed) > 0 {
		fmt.Printf("\nFAILED checks:\n  %s\n", strings.Join(d.failed, "\n  "))
		return 1
	}
	fmt.Println("\nall checks passed")
	return 0
}

func section(f string, a ...any) { fmt.Printf("\n== "+f+"\n", a...) }

func (d *demo) check(ok bool, what string) bool {
	mark := "ok  "
	if !ok {
		mark = "FAIL"
		d.failed = append(d.failed, what)
	}
	fmt.Printf("  [%s] %s\n", mark, what)
	return ok
}

func (d *demo) took(what string, dur time.Duration) {
	d.times = append(d.times, [2]string{what, dur.Round(time.Millisecond).String()})
}

func (d *demo) bgp(start time.Time) {
	l := d.lab
	dur, err := wait.For(30*time.Second, "BGP sessions", func() bool { ok, _ := l.Established(); return ok })
	if d.check(err == nil, "every node's BGP sessions (IPv4 and IPv6) are Established at the ToR") {
		d.took("lab start (namespaces, FRR, API server) -> sessions up", time.Since(start))
		d.took("agents started -> all sessions Established", time.Since(d.agentsStarted))
	}
	dur, err = wait.For(30*time.Second, "routes", l.RoutesComplete)
	if d.check(err == nil, "every node has a route to every other node's pod CIDR (proto petrel) and a blackhole for its own") {
		d.took("sessions Established -> routes in every kernel", dur)
	}
	section("FRR on the ToR: show bgp summary")
	out, _ := l.FRR.Vtysh("show bgp summary")
	fmt.Println(indent(out))
	for _, n := range l.Nodes {
		section("%s (%s, AS %d)", n.Name, n.Addr(), n.ASN())
		for _, args := range [][]string{append([]string{"gobgp"}, n.GoBGP("neighbor")...), append([]string{"gobgp"}, n.GoBGP("global", "rib")...),
			append([]string{"gobgp"}, n.GoBGP("global", "rib", "-a", "ipv6")...), {"ip", "route", "show", "proto", "61"}} {
			out, err := n.NS.Run(args[0], args[1:]...)
			fmt.Printf("  $ %s\n%s\n", strings.Join(args, " "), indent(out))
			d.check(err == nil, fmt.Sprintf("%s: %s answers", n.Name, strings.Join(args, " ")))
		}
	}
}

func (d *demo) podsAndPings() {
	section("Pods: one per node, created in the API, wired by the petrel CNI plugin, IPs reported as the kubelet would")
	for _, n := range d.lab.Nodes {
		name := "pod" + strings.TrimPrefix(n.Name, "node")
		p, err := d.kube.AddPod(context.Background(), d.lab, n, name, map[string]string{"app": name})
		if !d.check(err == nil, fmt.Sprintf("CNI ADD on %s: %v", n.Name, errText(err))) {
			continue
		}
		fmt.Printf("         %s on %s: %s\n", p.Name, n.Name, p.IP)
		d.pods = append(d.pods, p)
	}
	section("Ping matrix (rows: from, columns: to)")
	m := d.matrix()
	d.check(!strings.Contains(m, "x"), "every pod reaches every other pod across the ToR, no overlay, no NAT")
}

func errText(err error) string {
	if err == nil {
		return "ok"
	}
	return err.Error()
}

// matrix pings every ordered pair at once and prints the grid.
func (d *demo) matrix() string {
	res := make([][]bool, len(d.pods))
	var wg sync.WaitGroup
	for i := range d.pods {
		res[i] = make([]bool, len(d.pods))
		for j := range d.pods {
			if i != j {
				wg.Go(func() { res[i][j] = reach(d.pods[i], d.pods[j]) })
			}
		}
	}
	wg.Wait()
	var b strings.Builder
	b.WriteString("          ")
	for _, p := range d.pods {
		fmt.Fprintf(&b, "%-6s", p.Name)
	}
	b.WriteString("\n")
	for i, p := range d.pods {
		fmt.Fprintf(&b, "  %-8s", p.Name)
		for j := range d.pods {
			c := "-"
			if i != j {
				c = map[bool]string{true: "ok", false: "x"}[res[i][j]]
			}
			fmt.Fprintf(&b, "%-6s", c)
		}
		b.WriteString("\n")
	}
	fmt.Print(b.String())
	return b.String()[strings.Index(b.String(), "\n"):]
}

func reach(from, to labtest.Pod) bool {
	_, err := from.NS.Run("ping", "-c1", "-W0.3", to.IP)
	return err == nil
}

func (d *demo) policy() {
	if len(d.pods) < 3 {
		return
	}
	ctx := context.Background()
	p1, p2, p3 := d.pods[0], d.pods[1], d.pods[2]
	nps := d.kube.CS.NetworkingV1().NetworkPolicies("default")
	np := &netv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Name: "pod2-ingress", Namespace: "default"},
		Spec: netv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "pod2"}},
			PolicyTypes: []netv1.PolicyType{netv1.PolicyTypeIngress}}}
	section("NetworkPolicy default/pod2-ingress created in the API: isolate pod2 (ingress)")
	t0 := time.Now()
	_, err := nps.Create(ctx, np, metav1.CreateOptions{})
	if d.check(err == nil, fmt.Sprintf("create the NetworkPolicy: %s", errText(err))) {
		_, err = wait.For(10*time.Second, "deny", func() bool { return !reach(p1, p2) && !reach(p3, p2) })
		if d.check(err == nil, "pod1 (node1) and pod3 (node3) can no longer reach pod2 (node2)") {
			d.took("deny-all policy created in the API -> enforced across nodes", time.Since(t0))
		}
	}
	d.matrix()
	section("NetworkPolicy updated: allow pod2 ingress from pod1 only")
	np.Spec.Ingress = []netv1.NetworkPolicyIngressRule{{From: []netv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "pod1"}}}}}}
	cur, err := nps.Get(ctx, np.Name, metav1.GetOptions{})
	if err == nil {
		np.ResourceVersion = cur.ResourceVersion
		t0 = time.Now()
		_, err = nps.Update(ctx, np, metav1.UpdateOptions{})
	}
	if d.check(err == nil, fmt.Sprintf("update the NetworkPolicy: %s", errText(err))) {
		_, err = wait.For(10*time.Second, "allow", func() bool { return reach(p1, p2) })
		if d.check(err == nil && !reach(p3, p2), "pod1 reaches pod2 again, pod3 still cannot") {
			d.took("allow-from-pod1 update -> enforced", time.Since(t0))
		}
	}
	d.matrix()
	err = nps.Delete(ctx, np.Name, metav1.DeleteOptions{})
	if d.check(err == nil, fmt.Sprintf("delete the NetworkPolicy: %s", errText(err))) {
		_, err = wait.For(10*time.Second, "lifted", func() bool { return reach(p3, p2) })
		d.check(err == nil, "policy deleted: pod3 reaches pod2 again")
	}
}

func indent(s string) string {
	var b strings.Builder
	for l := range strings.Lines(strings.TrimRight(s, "\n")) {
		b.WriteString("    " + l)
	}
	return b.String()
}

// explain prints how to look around a kept lab and how to take it down.
func (d *demo) explain(dir string) {
	section("The lab is still running (PETREL_DEMO_KEEP is set)")
	if d.api != nil {
		fmt.Printf("  API:     ip netns exec %s curl -sk -H 'Authorization: Bearer %s' %s/apis/petrel.dev/v1alpha1/bgppeers\n", d.lab.Mgmt.Name, d.api.Token, d.api.URL)
		fmt.Printf("           (admin kubeconfig for a kubectl run in that namespace: %s)\n", d.api.Kubeconfig)
	}
	fmt.Printf("  FRR:     vtysh --vty_socket %s -c 'show bgp summary'\n", d.lab.FRR.Dir)
	for _, n := range d.lab.Nodes {
		fmt.Printf("  %s:   ip netns exec %s gobgp %s global rib    (config %s/config.yaml, log %s/agent.log)\n", n.Name, n.NS.Name, strings.Join(n.GoBGP(), " "), n.Dir, n.Dir)
	}
	for _, p := range d.pods {
		fmt.Printf("  %s:    ip netns exec %s ping <ip>   (%s)\n", p.Name, p.NS.Name, p.IP)
	}
	var pids, nss []string
	for _, n := range d.lab.Nodes {
		pids = append(pids, fmt.Sprint(n.Agent.Cmd.Process.Pid))
	}
	for _, p := range d.proxies {
		pids = append(pids, fmt.Sprint(p.Cmd.Process.Pid))
	}
	for _, pid := range d.lab.FRR.PIDs() {
		pids = append(pids, fmt.Sprint(pid))
	}
	if d.api != nil {
		for _, pid := range d.api.PIDs() {
			pids = append(pids, fmt.Sprint(pid))
		}
	}
	for _, ns := range d.lab.Namespaces() {
		nss = append(nss, ns.Name)
	}
	fmt.Printf("\n  tear down:\n    kill %s\n    for ns in %s; do ip netns delete $ns; done; rm -rf %s\n",
		strings.Join(pids, " "), strings.Join(nss, " "), dir)
}
