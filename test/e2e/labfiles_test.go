package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrelnet/petrel/internal/clab"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// deployCopy runs a shipped containerlab topology with the namespace
// runner, from a copy (the nodes write into their bind directories), with
// petrel-agent on the PATH as in Petrel's image. It returns the nodes.
func deployCopy(t *testing.T, topoDir, file string, tools ...string) map[string]clab.NodeState {
	t.Helper()
	netnstest.RequireRoot(t)
	for _, tool := range append([]string{"nsenter"}, tools...) {
		netnstest.RequireTool(t, tool)
	}
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-r", filepath.Join("../containerlab", topoDir), dir).CombinedOutput(); err != nil {
		t.Fatalf("copy topology: %v %s", err, out)
	}
	t.Setenv("PATH", binDir+":"+os.Getenv("PATH"))
	path, err := clab.Deploy(filepath.Join(dir, topoDir, file), filepath.Join(dir, "work"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { clab.Destroy(path) })
	t.Cleanup(func() { logTails(t, filepath.Join(dir, "work")) }) // runs first
	s, err := clab.ReadState(path)
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]clab.NodeState{}
	for _, n := range s.Nodes {
		nodes[n.Name] = n
	}
	return nodes
}

// logTails logs the end of each node's log under work when the test
// failed: the agents' own account of sessions and routes.
func logTails(t *testing.T, work string) {
	if !t.Failed() {
		return
	}
	logs, _ := filepath.Glob(filepath.Join(work, "*.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) > 60 {
			lines = lines[len(lines)-60:]
		}
		t.Logf("%s (last %d lines):\n%s", filepath.Base(l), len(lines), strings.Join(lines, "\n"))
	}
}

// waitForRoutes waits until each node's Petrel routes contain every wanted
// fragment (e.g. "10.244.2.0/24 via 10.99.1.1") and returns how long it took.
func waitForRoutes(t *testing.T, nodes map[string]clab.NodeState, want map[string][]string) time.Duration {
	t.Helper()
	var last string
	d, err := wait.For(30*time.Second, "routes", func() bool {
		for node, frags := range want {
			out, _ := clab.Exec(nodes[node], "ip route show proto 61")
			got := strings.Join(strings.Fields(out), " ")
			for _, f := range frags {
				if !strings.Contains(got, f) {
					last = node + ": " + got
					return false
				}
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("routes: %v; last seen %s", err, last)
	}
	return d
}

// TestMeshTopology: topology (c), three agents peering directly with each
// other; each learns the others' pod CIDRs from their own sessions only.
func TestMeshTopology(t *testing.T) {
	nodes := deployCopy(t, "mesh", "mesh.clab.yml")
	d := waitForRoutes(t, nodes, map[string][]string{
		"node1": {"10.244.2.0/24 via 10.95.12.2", "10.244.3.0/24 via 10.95.13.3", "blackhole 10.244.1.0/24"},
		"node2": {"10.244.1.0/24 via 10.95.12.1", "10.244.3.0/24 via 10.95.23.3"},
		"node3": {"10.244.1.0/24 via 10.95.13.1", "10.244.2.0/24 via 10.95.23.2"},
	})
	t.Logf("deploy -> full mesh routes: %s", d)
	// No transit: node1 has exactly one path to node3's CIDR, the direct one.
	out, _ := clab.Exec(nodes["node1"], "ip route show 10.244.3.0/24 proto 61")
	if strings.Contains(out, "nexthop") {
		t.Fatalf("node1 routes node3's pods through another node: %s", out)
	}
}

// TestBirdToR: topology (e), BIRD 2 as the top-of-rack router.
func TestBirdToR(t *testing.T) {
	nodes := deployCopy(t, "birdtor", "birdtor.clab.yml", "bird")
	d := waitForRoutes(t, nodes, map[string][]string{
		"node1": {"10.244.2.0/24 via 10.99.1.1"},
		"node2": {"10.244.1.0/24 via 10.99.2.1"},
	})
	t.Logf("deploy -> routes via BIRD: %s", d)
	out, err := clab.Exec(nodes["tor"], "birdc -s /tmp/bird.ctl show route")
	if err != nil || !strings.Contains(out, "10.244.1.0/24") || !strings.Contains(out, "10.244.2.0/24") {
		t.Fatalf("BIRD's table: %v\n%s", err, out)
	}
}

// TestRouteReflector: topology (d). The clients peer only with rr and still
// learn each other's pod CIDRs, with the originating node as next hop.
func TestRouteReflector(t *testing.T) {
	nodes := deployCopy(t, "rr", "rr.clab.yml")
	d := waitForRoutes(t, nodes, map[string][]string{
		"node1": {"10.244.2.0/24 via 10.94.0.3", "10.244.10.0/24 via 10.94.0.1"},
		"node2": {"10.244.1.0/24 via 10.94.0.2", "10.244.10.0/24 via 10.94.0.1"},
		"rr":    {"10.244.1.0/24 via 10.94.0.2", "10.244.2.0/24 via 10.94.0.3"},
	})
	t.Logf("deploy -> routes reflected: %s", d)
}
