package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// TestHostileToR makes FRR lie, the way a misconfigured or compromised
// top-of-rack router would: it announces a default route to nodes that
// have a static one, a /32 carved out of node1's own pod CIDR, and node2's
// pod CIDR to node1 with a pod of node1 as the next hop. Node1 keeps its
// static default (also through --uninstall), installs neither the /32 nor
// the route through its pod, and reports the conflict and the refused next
// hop in its metrics.
func TestHostileToR(t *testing.T) {
	l := newTorLabWith(t, 2, "importExtras: [0.0.0.0/0]\nallowUnsafe: {defaultRoute: true}\n")
	wait.Until(t, 20*time.Second, "sessions Established", func() bool { ok, _ := l.Established(); return ok })
	wantRoutes(t, l, 20*time.Second)
	n1, n2 := l.Nodes[0], l.Nodes[1]
	pod := mustPod(t, l, n1, "victim") // 10.244.1.2: the next hop FRR will name
	if pod.IP != "10.244.1.2" {
		t.Fatalf("pod got %s, the route-map below names 10.244.1.2", pod.IP)
	}
	staticDefault := func() string { out, _ := n1.NS.Run("ip", "route", "show", "default"); return strings.TrimSpace(out) }
	before := staticDefault()
	vtysh(t, l, "ip prefix-list NODE2 permit "+n2.PodNet,
		"route-map HOSTILE permit 10", "match ip address prefix-list NODE2", "set ip next-hop 10.244.1.2", "exit",
		"route-map HOSTILE permit 20", "exit",
		"router bgp 65000", "no bgp network import-check", "address-family ipv4 unicast", "network 0.0.0.0/0", "network 10.244.1.7/32",
		"neighbor "+n1.Addr()+" route-map HOSTILE out", "exit-address-family", "exit")
	if out, err := l.FRR.Vtysh("clear bgp * soft out"); err != nil {
		t.Fatalf("vtysh: %v %s", err, out)
	}
	metric := func(name string) string {
		for line := range strings.Lines(httpGet(t, n1.NS, "http://127.0.0.1:9465/metrics")) {
			if strings.HasPrefix(line, name+" ") {
				return strings.TrimSpace(strings.TrimPrefix(line, name+" "))
			}
		}
		return ""
	}
	// FRR sent it all: node1 has the default in its RIB (held), and refuses
	// the next hop of node2's CIDR.
	if _, err := wait.For(20*time.Second, "held default and refused next hop", func() bool {
		return metric("petrel_route_conflicts") == "1" && metric("petrel_nexthops_rejected") == "1"
	}); err != nil {
		rib, _ := n1.NS.Run(gobgpCLI(t), n1.GoBGP("global", "rib")...)
		adv, _ := l.FRR.Vtysh("show bgp ipv4 unicast neighbors " + n1.Addr() + " advertised-routes")
		log, _ := os.ReadFile(filepath.Join(n1.Dir, "agent.log"))
		t.Fatalf("%v: conflicts %q, rejected next hops %q\nnode1 RIB:\n%s\nFRR advertises to node1:\n%s\nnode1 routes:\n%s\nagent log:\n%s",
			err, metric("petrel_route_conflicts"), metric("petrel_nexthops_rejected"), rib, adv, petrelRoutes(t, n1), importantLines(string(log)))
	}
	if got := staticDefault(); got != before || strings.Contains(got, "proto 61") {
		t.Fatalf("node1's static default became %q, was %q", got, before)
	}
	routes := petrelRoutes(t, n1)
	for _, bad := range []string{"10.244.1.7", "10.244.2.0/24 via 10.244.1.2", "default"} {
		if strings.Contains(routes, bad) {
			t.Fatalf("node1 installed %q from the lying ToR:\n%s", bad, routes)
		}
	}
	// Node2 was told the truth: it keeps its routes.
	if !strings.Contains(petrelRoutes(t, n2), n1.PodNet) {
		t.Fatalf("node2 lost node1's CIDR:\n%s", petrelRoutes(t, n2))
	}
	out, err := n1.NS.Run(l.AgentBin, "--config", n1.Dir+"/config.yaml", "--uninstall")
	if err != nil {
		t.Fatalf("--uninstall: %v %s", err, out)
	}
	if got := staticDefault(); got != before {
		t.Fatalf("--uninstall took the static default: now %q, was %q", got, before)
	}
}

func gobgpCLI(t *testing.T) string { return netnstest.RequireTool(t, "gobgp") }

// vtysh configures the ToR: each line a command in configuration mode.
func vtysh(t *testing.T, l *labtest.TorLab, lines ...string) {
	t.Helper()
	args := []string{"--vty_socket", l.FRR.Dir, "-c", "configure terminal"}
	for _, c := range lines {
		args = append(args, "-c", c)
	}
	if out, err := exec.Command("vtysh", args...).CombinedOutput(); err != nil {
		t.Fatalf("vtysh: %v %s", err, out)
	}
}

// importantLines are a log's warnings and errors.
func importantLines(log string) string {
	var out []string
	for l := range strings.Lines(log) {
		if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
			out = append(out, strings.TrimSpace(l))
		}
	}
	return strings.Join(out, "\n")
}
