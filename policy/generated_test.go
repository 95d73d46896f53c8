package policy_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/policycases"
	"github.com/petrelnet/petrel/policy"
)

// generatedInputs are the generator's cases: each the Cluster with a few
// random policies. seed makes a failure reproducible.
func generatedInputs(seed uint64, cases, perCase int) []policy.Input {
	r := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	out := make([]policy.Input, cases)
	for c := range out {
		in := policycases.GeneratedCluster()
		for i := range 1 + r.IntN(perCase) {
			in.Policies = append(in.Policies, policycases.Generate(r, fmt.Sprintf("g%d-%d", c, i)))
		}
		out[c] = in
	}
	return out
}

// probeAddrs are every pod's addresses and a few outside the cluster,
// inside and outside the generator's ipBlocks.
func probeAddrs(in policy.Input) []netip.Addr {
	var out []netip.Addr
	for _, p := range in.Pods {
		out = append(out, p.IPs...)
	}
	for _, a := range []string{"192.0.2.7", "198.51.100.1", "10.244.2.9", "2001:db8::7", "fd00:10:244:2::9", "2002::1"} {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

var probePorts = []uint16{79, 80, 81, 82, 84, 85, 89, 90, 93, 443}

// TestGeneratedPoliciesAgreeWithTheModel compiles thousands of random
// policies and compares every verdict of the compiled chains with the
// independent model in policycases, for every ordered pair of probe
// addresses of one family, each protocol and a spread of ports.
func TestGeneratedPoliciesAgreeWithTheModel(t *testing.T) {
	for c, in := range generatedInputs(1, 600, 5) {
		d := policy.Compile(in)
		addrs := probeAddrs(in)
		for _, src := range addrs {
			for _, dst := range addrs {
				if src == dst || src.Is4() != dst.Is4() {
					continue
				}
				for _, proto := range []policy.Protocol{policy.TCP, policy.UDP, policy.SCTP} {
					for _, port := range probePorts {
						want := policycases.Allowed(in, src, dst, proto, port)
						if got := d.Allowed(src, dst, proto, port); got != want {
							t.Fatalf("seed 1 case %d: %s -> %s %d/%d: compiled %v, model %v\npolicies: %+v", c, src, dst, proto, port, got, want, in.Policies)
						}
					}
				}
			}
		}
	}
}
