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
		if wrong := n.matrix(c.Probe.Proto, c.Allowed); len(wrong) > 0 {
			t.Errorf("case %q, proto %d port %d:\n%v", c.Name, c.Probe.Proto, c.Probe.Port, wrong)
		}
		ran++
	}
	t.Logf("%d cases with real packets", ran)

	// A sample of the generator's random policies (see
	// generated_kernel_test.go), judged by the independent model.
	for c, in := range generatedInputs(3, 10, 6) {
		n.sync(in, c%2 == 0)
		for _, proto := range []policy.Protocol{policy.TCP, policy.UDP} {
			port := map[policy.Protocol]uint16{policy.TCP: 80, policy.UDP: 81}[proto]
			model := func(from, to string) bool {
				return policycases.Allowed(in, n.pods[from].pod.IPs[0], n.pods[to].pod.IPs[0], proto, port)
			}
			if wrong := n.matrix(proto, model); len(wrong) > 0 {
				t.Errorf("generated seed 3 case %d, proto %d:\n%v\npolicies: %s", c, proto, wrong, policiesString(in.Policies))
			}
		}
	}
}

// matrix probes every ordered pair of pods with a real connection and
// returns the pairs where the packets disagree with want.
func (n *policyNode) matrix(proto policy.Protocol, want func(from, to string) bool) []string {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var wrong []string
	for from := range n.pods {
		for to := range n.pods {
			if from == to {
				continue
			}
			wg.Go(func() {
				if got, w := n.reach(from, to, proto), want(from, to); got != w {
					mu.Lock()
					wrong = append(wrong, fmt.Sprintf("%s -> %s: got %v want %v", from, to, got, w))
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	return wrong
}
