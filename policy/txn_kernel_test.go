package policy_test

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/policy"
)

// TestRefusedReplaceChangesNothing: a whole-table transaction the kernel
// refuses (overlapping ranges in one set, behind hundreds of good
// elements) returns the kernel's error naming the message, leaves the
// table as it was, and the next transaction on the same syncer works.
func TestRefusedReplaceChangesNothing(t *testing.T) {
	netnstest.RequireTool(t, "nft")
	n := newPolicyNode(t)
	n.addPod("x", "a", map[string]string{"app": "a"})
	n.addPod("y", "b", map[string]string{"app": "b"})
	deny := policy.Policy{Namespace: "y", Name: "deny", Ingress: true}
	good := n.sync(n.input(deny), true)
	before := n.setNames()
	if len(before) == 0 {
		t.Fatal("no sets listed before the refused transaction")
	}

	bad := policy.Compile(n.input(deny))
	var elems []policy.Elem
	a := netip.MustParseAddr("10.200.0.1")
	for range 1500 {
		elems = append(elems, policy.Elem{AddrLo: a, AddrHi: a})
		a = a.Next().Next()
	}
	lo, hi := netip.MustParseAddr("10.201.0.0"), netip.MustParseAddr("10.201.0.255")
	elems = append(elems, policy.Elem{AddrLo: lo, AddrHi: hi}, policy.Elem{AddrLo: lo.Next(), AddrHi: hi.Next()})
	bad.Sets["broken-4"] = &policy.Set{Name: "broken-4", Family: policy.V4, Kind: policy.AddrSet, Elems: elems}
	n.syncer.Invalidate()
	err := n.syncer.Sync(bad)
	if err == nil {
		t.Fatal("overlapping ranges accepted")
	}
	t.Logf("kernel's error: %v", err)
	var errno syscall.Errno
	if !strings.Contains(err.Error(), "elements of set broken-4") || !errors.As(err, &errno) {
		t.Errorf("error %q: want the kernel's errno and the message it refused", err)
	}
	if after := n.setNames(); !slices.Equal(after, before) {
		t.Errorf("sets after the refused transaction %v, before %v", after, before)
	}
	n.check(good, policy.TCP, func(from, to string) bool { return !strings.HasPrefix(to, "y/") })

	n.syncer.Invalidate()
	if err := n.syncer.Sync(good); err != nil {
		t.Fatalf("the next transaction: %v", err)
	}
	n.check(good, policy.TCP, func(from, to string) bool { return !strings.HasPrefix(to, "y/") })
}

// setNames lists the sets of Petrel's table in the kernel.
func (n *policyNode) setNames() []string {
	n.t.Helper()
	out, err := n.ns.Run("nft", "list", "sets", "inet")
	if err != nil {
		n.t.Fatalf("nft list sets: %v %s", err, out)
	}
	var names []string
	for _, f := range strings.Fields(out) {
		if strings.HasSuffix(f, "-4") || strings.HasSuffix(f, "-6") {
			names = append(names, f)
		}
	}
	slices.Sort(names)
	return names
}
