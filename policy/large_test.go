package policy_test

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/policy"
)

// TestLargeScatteredSets: sets of thousands of scattered addresses (a
// namespace's pods spread over many nodes), IPv4 and IPv6, address and
// address.protocol.port sets, replaced whole and then changed in place.
// The kernel must hold exactly the compiled elements, and real packets
// must follow the policies. A set element list longer than 64 KiB used to
// wrap its netlink length: the kernel refused the whole table.
func TestLargeScatteredSets(t *testing.T) {
	netnstest.RequireTool(t, "nft")
	n := newPolicyNode(t)
	n.addPod("x", "a", map[string]string{"role": "client"})
	n.addPod("x", "b", map[string]string{"role": "client"})
	n.addPod("y", "s", map[string]string{"role": "server"})
	policies := []policy.Policy{
		{Namespace: "x", Name: "isolate", Ingress: true},
		{Namespace: "x", Name: "from-y", Ingress: true, IngressRules: []policy.Rule{{
			Peers: []policy.Peer{{NamespaceSelector: &policy.Selector{MatchLabels: map[string]string{"ns": "y"}}}},
			Ports: []policy.Port{{Protocol: policy.TCP, Number: 80}, {Protocol: policy.UDP, Number: 81}}}}},
		{Namespace: "y", Name: "from-clients", Ingress: true, IngressRules: []policy.Rule{{
			Peers: []policy.Peer{{NamespaceSelector: &policy.Selector{MatchLabels: map[string]string{"ns": "x"}},
				PodSelector: &policy.Selector{MatchLabels: map[string]string{"role": "client"}}}}}}},
	}
	// Pods elsewhere in the cluster: every other address, so nothing merges.
	scattered := func(first, count int) []policy.Pod {
		var out []policy.Pod
		for i := first; i < first+count; i++ {
			v4 := netip.AddrFrom4([4]byte{10, 250, byte(i >> 7), byte(i<<1) | 1})
			v6 := netip.AddrFrom16([16]byte{0xfd, 0, 2, 0x50, 14: byte(i >> 7), 15: byte(i<<1) | 1})
			out = append(out, policy.Pod{Namespace: "x", Name: fmt.Sprint("far", i), Labels: map[string]string{"role": "client"},
				IPs: []netip.Addr{v4, v6}})
		}
		return out
	}
	allowed := func(from, to string) bool {
		return from[0] != to[0] // x and y reach each other; x is isolated within
	}
	for _, step := range []struct {
		name        string
		first, pods int
		full        bool
	}{
		{"replaced whole", 0, 4000, true},
		{"1,500 gone, 700 new, in place", 1500, 3200, false},
	} {
		in := n.input(policies...)
		in.Pods = append(in.Pods, scattered(step.first, step.pods)...)
		d := n.sync(in, step.full)
		big := 0
		for name, s := range d.Sets {
			if len(s.Elems) < 1000 {
				continue
			}
			big++
			if got := n.kernelElements(name); got != len(s.Elems) {
				t.Errorf("%s: set %s holds %d elements in the kernel, compiled %d", step.name, name, got, len(s.Elems))
			}
		}
		// in-iso-4 and -6, the clients as a source (address set) and x's
		// pods with their ports as a destination (concatenated set).
		if big < 4 {
			t.Fatalf("%s: only %d sets of 1,000 elements or more; the test means 4", step.name, big)
		}
		n.check(d, policy.TCP, allowed)
		n.check(d, policy.UDP, func(from, to string) bool { return allowed(from, to) })
	}
}

// kernelElements counts a set's elements as nft lists them.
func (n *policyNode) kernelElements(set string) int {
	n.t.Helper()
	out, err := n.ns.Run("nft", "-j", "list", "set", "inet", policy.TableName, set)
	if err != nil {
		n.t.Fatalf("nft list set %s: %v %s", set, err, out)
	}
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		n.t.Fatalf("nft -j: %v", err)
	}
	for _, o := range doc.Nftables {
		if o.Set != nil {
			return len(o.Set.Elem)
		}
	}
	return -1
}
