package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/petrelnet/petrel/internal/clab"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// TestDualToRWithBFD runs topology (b): each node learns the other's pod
// CIDR from both ToRs as one ECMP route; when a ToR dies, BFD removes its
// next hop long before the hold timer would.
func TestDualToRWithBFD(t *testing.T) {
	nodes := deployCopy(t, "dualtor", "dualtor.clab.yml", "/usr/lib/frr/bfdd")
	route := func() string {
		out, _ := clab.Exec(nodes["node1"], "ip route show 10.244.2.0/24 proto 61")
		return strings.Join(strings.Fields(out), " ")
	}
	ecmp := "10.244.2.0/24 nexthop via 10.96.1.1 dev eth2 weight 1 nexthop via 10.97.1.1 dev eth1 weight 1"
	d := wait.Until(t, 30*time.Second, "node1's ECMP route to node2's pods via both ToRs", func() bool {
		r := route()
		return strings.Contains(r, "via 10.96.1.1") && strings.Contains(r, "via 10.97.1.1")
	})
	t.Logf("deploy -> ECMP route via both ToRs: %s (%s)", d, route())
	if r := route(); r != ecmp {
		t.Logf("route reads %q", r)
	}
	// BFD acts only on a session that was Up: wait for it, as seen by tor2.
	wait.Until(t, 15*time.Second, "BFD up between node1 and tor2", func() bool {
		out, _ := clab.Exec(nodes["tor2"], "vtysh -c 'show bfd peer 10.96.1.2 json'")
		return strings.Contains(out, `"status":"up"`)
	})
	// tor2 fails silently: it drops every packet, so no TCP reset or link
	// change tells anyone. Only BFD (300 ms) notices before the 9 s hold time.
	drop := "nft add table inet blackout; " +
		"nft add chain inet blackout in '{ type filter hook input priority -500; policy drop; }'; " +
		"nft add chain inet blackout out '{ type filter hook output priority -500; policy drop; }'"
	if out, err := clab.Exec(nodes["tor2"], drop); err != nil {
		t.Fatalf("silence tor2: %v %s", err, out)
	}
	silenced := time.Now()
	wait.Until(t, 3*time.Second, "tor2's next hop gone (the BGP hold time is 9 s)", func() bool {
		r := route()
		return strings.Contains(r, "via 10.97.1.1") && !strings.Contains(r, "10.96.1.1")
	})
	t.Logf("tor2 silenced -> its next hop removed (BFD): %s", time.Since(silenced))
}
