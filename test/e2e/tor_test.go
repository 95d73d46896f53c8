package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
	"github.com/petrelnet/petrel/policy"
)

func ping(t *testing.T, from netnstest.NS, to string, args ...string) string {
	t.Helper()
	// One reply within 5 s, a request a second until then: reachability,
	// not the first packet's fate (a CI run had the only request, IPv6, to
	// a pod created a moment before go unanswered within 2 s; loss is
	// measured where it matters, with streams).
	out, err := from.Run("ping", append([]string{"-c1", "-w5"}, append(args, to)...)...)
	if err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", to, from.Name, err, out)
	}
	return out
}

// TestTorLab is the lab of the BGP issue: an FRR ToR, two nodes running the
// real agent, a pod on each wired by the real CNI binary.
func TestTorLab(t *testing.T) {
	l := newTorLab(t, 2)
	gobgp := netnstest.RequireTool(t, "gobgp")
	d := wait.Until(t, 20*time.Second, "FRR sees every node session Established", func() bool { ok, _ := l.Established(); return ok })
	t.Logf("agents started -> sessions Established: %s", d)
	d = wantRoutes(t, l, 20*time.Second)
	t.Logf("-> pod CIDR routes on every node: %s", d)
	n1, n2 := l.Nodes[0], l.Nodes[1]
	p1, p2 := mustPod(t, l, n1, "pod1"), mustPod(t, l, n2, "pod2")
	ping(t, p1.NS, p2.IP)
	ping(t, p2.NS, p1.IP)
	ping(t, n1.NS, p2.IP) // node to a pod on another node
	// IPv6 travels over the IPv6 sessions, next hop the ToR's global address.
	ping(t, p1.NS, p2.IP6)
	ping(t, p2.NS, p1.IP6)

	// The stock gobgp CLI, inside the node, over the agent's local API.
	out, err := n1.NS.Run(gobgp, n1.GoBGP("neighbor")...)
	if err != nil || !strings.Contains(out, n1.TorAddr()) || !strings.Contains(out, "Establ") {
		t.Fatalf("gobgp neighbor: %v\n%s", err, out)
	}
	out, err = n1.NS.Run(gobgp, n1.GoBGP("global", "rib")...)
	if err != nil || !strings.Contains(out, n2.PodNet) || !strings.Contains(out, n1.PodNet) {
		t.Fatalf("gobgp global rib: %v\n%s", err, out)
	}

	// Leaving the cluster: the external host sees node1's address, while
	// pod2 saw pod1's own (pod-to-pod is never NATed).
	if got := labtest.SeenAs(t, l.External, p1, "10.100.0.2:7000"); got != n1.Addr() {
		t.Fatalf("the external host saw pod1 as %s, want node1's %s", got, n1.Addr())
	}
	if got := labtest.SeenAs(t, p2.NS, p1, p2.IP+":7001"); got != p1.IP {
		t.Fatalf("pod2 saw pod1 as %s, want %s", got, p1.IP)
	}

	// Metrics and health on the agent's loopback address.
	// The IPAM gauge follows the store within a poll interval of the ADD.
	var metrics string
	wants := []string{"petrel_routes_installed 4", "petrel_fib_sync_seconds_count", "petrel_ipam_allocated_addresses 2", "bgp_peer_state"}
	_, err = wait.For(5*time.Second, "metrics", func() bool {
		metrics = httpGet(t, n1.NS, "http://127.0.0.1:9465/metrics")
		for _, want := range wants {
			if !strings.Contains(metrics, want) {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("/metrics lacks one of %q:\n%s", wants, metrics)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if got := httpGet(t, n1.NS, "http://127.0.0.1:9465"+path); got != "ok\n" {
			t.Fatalf("%s: %q", path, got)
		}
	}

	// A NetworkPolicy dropped into node2's policyDir isolates pod2.
	policyDirCycle(t, n2, p1, p2)

	// Someone deletes a Petrel route by hand: the agent's netlink watch
	// notices and the loop puts it back.
	if out, err := n1.NS.Run("ip", "route", "del", n2.PodNet); err != nil {
		t.Fatalf("foreign delete: %v %s", err, out)
	}
	d = wantRoutes(t, l, 10*time.Second)
	t.Logf("route deleted by hand -> back: %s", d)
	repairsDrift(t, n1)

	// kill -9 the agent: its routes stay in the kernel, the ToR keeps the
	// node's route as stale (graceful restart), pods keep talking.
	before := petrelRoutes(t, n1)
	if err := n1.Agent.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	out, err = p1.NS.Run("ping", "-c", "30", "-i", "0.1", "-W", "1", p2.IP)
	if err != nil || !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("pings while the agent is down: %v\n%s", err, out)
	}
	if got := petrelRoutes(t, n1); got != before {
		t.Fatalf("routes changed while the agent was down:\n%s\nwas\n%s", got, before)
	}
	// The new agent keeps the routes it finds until its session has been
	// up a while: node2's pod CIDR never leaves node1's kernel (the first
	// sync used to remove it until the session brought it back).
	stopWatch := make(chan struct{})
	missing := make(chan string, 1)
	go func() {
		for {
			select {
			case <-stopWatch:
				close(missing)
				return
			case <-time.After(20 * time.Millisecond):
			}
			if out, err := n1.NS.Run("ip", "route", "show", n2.PodNet, "proto", "61"); err == nil && strings.TrimSpace(out) == "" {
				select {
				case missing <- time.Now().Format("15:04:05.000"):
				default:
				}
			}
		}
	}()
	if err := n1.Agent.Start(); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 20*time.Second, "session back after agent restart", func() bool { ok, _ := l.Established(); return ok })
	t.Logf("agent restart -> Established: %s", d)
	wantRoutes(t, l, 10*time.Second)
	time.Sleep(5 * time.Second) // past the new agent's settle time: a window, not a wait
	close(stopWatch)
	if at, ok := <-missing; ok {
		t.Fatalf("%s left node1's kernel across the agent's restart (at %s)", n2.PodNet, at)
	}
	ping(t, p1.NS, p2.IP)

	// The ToR restarts: every node loses and regains its session.
	l.FRR.Kill()
	if err := l.FRR.Start(); err != nil {
		t.Fatal(err)
	}
	d = wait.Until(t, 20*time.Second, "sessions back after ToR restart", func() bool { ok, _ := l.Established(); return ok })
	t.Logf("ToR restart -> Established: %s", d)
	d2 := wantRoutes(t, l, 20*time.Second)
	t.Logf("ToR restart -> routes on every node: %s after Established", d2)
	wait.Until(t, 10*time.Second, "pod to pod across the ToR after its restart", func() bool {
		_, err := p1.NS.Run("ping", "-c1", "-W1", p2.IP)
		return err == nil
	})

	// SIGTERM keeps everything; --uninstall then removes what the agent owns.
	if err := n1.Agent.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := petrelRoutes(t, n1); !strings.Contains(got, n2.PodNet) {
		t.Fatalf("SIGTERM removed routes: %q", got)
	}
	out, err = n1.NS.Run(filepath.Join(binDir, "petrel-agent"), "--config", filepath.Join(n1.Dir, "config.yaml"), "--uninstall")
	if err != nil {
		t.Fatalf("--uninstall: %v\n%s", err, out)
	}
	if got := petrelRoutes(t, n1); got != "" {
		t.Fatalf("routes left after --uninstall: %q", got)
	}
	if _, err := os.Stat(filepath.Join(n1.Dir, "net.d", cni.ConfListFile)); !os.IsNotExist(err) {
		t.Fatalf("conflist left after --uninstall: %v", err)
	}
	ping(t, n1.NS, p1.IP) // the pod itself is untouched
	if out, err := n1.NS.Run("nft", "list", "table", "inet", "petrel"); err == nil {
		t.Fatalf("nftables table left after --uninstall:\n%s", out)
	}
}

func policyDirCycle(t *testing.T, n *labtest.Node, from, to labtest.Pod) {
	pods := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: pod1, namespace: default, labels: {app: pod1}}
spec: {containers: [{name: c, image: none}]}
status: {podIPs: [{ip: %s}]}
---
apiVersion: v1
kind: Pod
metadata: {name: pod2, namespace: default, labels: {app: pod2}}
spec: {containers: [{name: c, image: none, ports: [{name: http, containerPort: 80}]}]}
status: {podIPs: [{ip: %s}]}
`, from.IP, to.IP)
	deny := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate-pod2, namespace: default}
spec:
  podSelector: {matchLabels: {app: pod2}}
  policyTypes: [Ingress]
`
	dir := filepath.Join(n.Dir, "policies")
	reachable := func() bool { _, err := from.NS.Run("ping", "-c1", "-W1", to.IP); return err == nil }
	os.WriteFile(filepath.Join(dir, "pods.yaml"), []byte(pods), 0o644)
	os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(deny), 0o644)
	d := wait.Until(t, 10*time.Second, "policy from policyDir blocks pod1 -> pod2", func() bool { return !reachable() })
	t.Logf("policy file written -> enforced: %s", d)
	// A broken file is reported and ignored; the last good state stays.
	os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte("kind: NetworkPolicy\nspec: [not, a, map\n"), 0o644)
	time.Sleep(1500 * time.Millisecond) // three directory polls: long enough for a wrong reload to show
	if reachable() {
		t.Fatal("a broken policy file opened the isolated pod")
	}
	logs, _ := os.ReadFile(filepath.Join(n.Dir, "agent.log"))
	if !strings.Contains(string(logs), "broken.yaml") {
		t.Fatal("the broken policy file was not reported by name")
	}
	os.Remove(filepath.Join(dir, "broken.yaml"))
	os.Remove(filepath.Join(dir, "policy.yaml"))
	d = wait.Until(t, 10*time.Second, "policy removed: pod1 -> pod2 again", reachable)
	t.Logf("policy file removed -> traffic allowed: %s", d)
}

// httpGet fetches a URL from inside a namespace (the socket is made there).
func httpGet(t *testing.T, ns netnstest.NS, url string) string {
	t.Helper()
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = ns.Do(func() error { c, err = net.Dial(network, addr); return err })
		return c, err
	}}
	resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// repairsDrift deletes by hand what the agent owns besides routes — its
// nftables table, the rule jumping to the ingress chain, the CNI config —
// and checks that each is back within a second (the periodic resync is 30 s).
func repairsDrift(t *testing.T, n *labtest.Node) {
	t.Helper()
	table := func() string { out, _ := n.NS.Run("nft", "list", "table", "inet", policy.TableName); return out }
	conf := filepath.Join(n.Dir, "net.d", cni.ConfListFile)
	jump := func() string {
		for l := range strings.Lines(func() string {
			out, _ := n.NS.Run("nft", "-a", "list", "chain", "inet", policy.TableName, "forward")
			return out
		}()) {
			if strings.Contains(l, "jump ingress") {
				return strings.TrimSpace(l[strings.LastIndex(l, "handle ")+len("handle "):])
			}
		}
		return ""
	}
	for _, c := range []struct {
		what string
		do   func() error
		back func() bool
	}{
		{"nftables table deleted", func() error { _, err := n.NS.Run("nft", "delete", "table", "inet", policy.TableName); return err },
			func() bool { return strings.Contains(table(), "jump ingress") }},
		{"jump ingress rule deleted", func() error {
			_, err := n.NS.Run("nft", "delete", "rule", "inet", policy.TableName, "forward", "handle", jump())
			return err
		}, func() bool { return jump() != "" }},
		{"CNI config deleted", func() error { return os.Remove(conf) }, func() bool { _, err := os.Stat(conf); return err == nil }},
		{"CNI config truncated", func() error { return os.Truncate(conf, 0) }, func() bool { fi, err := os.Stat(conf); return err == nil && fi.Size() > 0 }},
	} {
		if err := c.do(); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		d := wait.Until(t, time.Second, c.what+": repaired", c.back)
		t.Logf("%s -> repaired: %s", c.what, d)
	}
}
