package policy_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/policycases"
	"github.com/petrelnet/petrel/policy"
)

// TestUpstreamMatricesWithRealPackets runs the upstream e2e cases on nine
// real pods (namespaces x, y, z; pods a, b, c) wired by the CNI binary,
// every ordered pair probed with a real TCP or UDP connection after each
// incremental sync. SCTP cases run only in the compiler's tests: this
// kernel has no SCTP.
func TestUpstreamMatricesWithRealPackets(t *testing.T) {
	netnstest.RequireTool(t, "nft")
	n := newPolicyNode(t)
	fixture := policycases.Cluster()
	for i, p := range fixture.Pods {
		real := n.addPod(p.Namespace, p.Name, p.Labels)
		if real.pod.IPs[0] != p.IPs[0] {
			t.Fatalf("%s/%s got %s, the fixture expects %s", p.Namespace, p.Name, real.pod.IPs[0], p.IPs[0])
		}
		fixture.Pods[i].IPs = real.pod.IPs // IPv4 only here; IPv6 is covered by the compiler's tests
		real.pod = fixture.Pods[i]
	}
	n.sync(policy.Input{Namespaces: fixture.Namespaces, Pods: fixture.Pods}, true)
	ran := 0
	for _, c := range policycases.Cases {
		if c.Probe.Proto == policy.SCTP {
			continue
		}
		in := policy.Input{Namespaces: fixture.Namespaces, Pods: fixture.Pods, Policies: c.Policies}
		n.sync(in, false)
		var mu sync.Mutex
		var wg sync.WaitGroup
		var wrong []string
		for from := range n.pods {
			for to := range n.pods {
				if from == to {
					continue
				}
				wg.Go(func() {
					if got, want := n.reach(from, to, c.Probe.Proto), c.Allowed(from, to); got != want {
						mu.Lock()
						wrong = append(wrong, fmt.Sprintf("%s -> %s: got %v want %v", from, to, got, want))
						mu.Unlock()
					}
				})
			}
		}
		wg.Wait()
		if len(wrong) > 0 {
			t.Errorf("case %q, proto %d port %d:\n%v", c.Name, c.Probe.Proto, c.Probe.Port, wrong)
		}
		ran++
	}
	t.Logf("%d cases with real packets", ran)
}
