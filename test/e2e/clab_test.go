package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/petrelnet/petrel/internal/clab"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// TestContainerlabTopology runs the shipped containerlab file of topology
// (a) with the namespace runner: FRR and three real agents come up, every
// session is Established, every node learns the others' pod CIDRs, and
// destroy leaves nothing.
func TestContainerlabTopology(t *testing.T) {
	nodes := deployCopy(t, "tor", "tor.clab.yml", "/usr/lib/frr/bgpd")
	d := wait.Until(t, 30*time.Second, "FRR sees three Established sessions", func() bool {
		out, _ := clab.Exec(nodes["tor"], "vtysh -c 'show bgp summary json'")
		return strings.Count(out, `"state":"Established"`) == 3
	})
	t.Logf("deploy -> sessions Established: %s", d)
	wait.Until(t, 10*time.Second, "every node has the other nodes' pod CIDRs", func() bool {
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
}
