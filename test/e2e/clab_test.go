package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrelnet/petrel/internal/netnstest"
	"github.com/petrelnet/petrel/test/lab/clab"
)

// TestContainerlabTopology runs the shipped containerlab file of topology
// (a) with the namespace runner: FRR and three real agents come up, every
// session is Established, every node learns the others' pod CIDRs, and
// destroy leaves nothing.
func TestContainerlabTopology(t *testing.T) {
	netnstest.RequireRoot(t)
	netnstest.RequireTool(t, "/usr/lib/frr/bgpd")
	netnstest.RequireTool(t, "nsenter")
	// The lab writes into its bind directories: run a copy.
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-r", "../containerlab/tor", dir).CombinedOutput(); err != nil {
		t.Fatalf("copy topology: %v %s", err, out)
	}
	// The nodes run petrel-agent by name, as in Petrel's image.
	t.Setenv("PATH", binDir+":"+os.Getenv("PATH"))
	path, err := clab.Deploy(filepath.Join(dir, "tor", "tor.clab.yml"), filepath.Join(dir, "work"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { clab.Destroy(path) })
	s, err := clab.ReadState(path)
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]clab.NodeState{}
	for _, n := range s.Nodes {
		nodes[n.Name] = n
	}
	d := waitUntil(t, 30*time.Second, "FRR sees three Established sessions", func() bool {
		out, _ := clab.Exec(nodes["tor"], "vtysh -c 'show bgp summary json'")
		return strings.Count(out, `"state":"Established"`) == 3
	})
	t.Logf("deploy -> sessions Established: %s", d)
	waitUntil(t, 10*time.Second, "every node has the other nodes' pod CIDRs", func() bool {
		for i, name := range []string{"node1", "node2", "node3"} {
			out, _ := clab.Exec(nodes[name], "ip route show proto 61")
			for j := 1; j <= 3; j++ {
				want := "10.244." + string(rune('0'+j)) + ".0/24"
				if j == i+1 {
					want = "blackhole " + want
				}
				if !strings.Contains(out, want) {
					return false
				}
			}
		}
		return true
	})
	pids := []int{}
	for _, n := range s.Nodes {
		pids = append(pids, n.Holder.PID)
		for _, p := range n.Procs {
			pids = append(pids, p.PID)
		}
	}
	if err := clab.Destroy(path); err != nil {
		t.Fatal(err)
	}
	for _, n := range s.Nodes {
		if _, err := os.Stat("/var/run/netns/" + n.NetNS); err == nil {
			t.Errorf("namespace %s left", n.NetNS)
		}
	}
	for _, pid := range pids {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); err == nil && len(b) > 0 {
			t.Errorf("process %d left: %s", pid, strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
}
