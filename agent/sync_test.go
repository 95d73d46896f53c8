package agent

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/petrelnet/petrel/agent/config"
	"github.com/petrelnet/petrel/bgp"
	"github.com/petrelnet/petrel/ipam"
	"github.com/petrelnet/petrel/policy"
	"github.com/petrelnet/petrel/route"
)

// rig is the loop with every dataplane piece faked: no root, no kernel.
type rig struct {
	t   *testing.T
	j   *journal
	a   *agent
	src *fakeSource
	bgp *fakeBGP
	rt  *fakeRoutes
	fw  *fakeFirewall
	cni *fakeCNI
}

var (
	podCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")}
	tor      = bgp.Peer{Address: netip.MustParseAddr("10.0.0.1"), ASN: 65000}
	node2    = bgp.Peer{Address: netip.MustParseAddr("10.0.0.3"), ASN: 64512}
	learned  = []bgp.Route{{Prefix: netip.MustParsePrefix("10.244.2.0/24"), NextHops: []netip.Addr{netip.MustParseAddr("10.0.0.3")}}}
)

func newRig(t *testing.T) *rig {
	t.Helper()
	j := &journal{}
	r := &rig{t: t, j: j, bgp: &fakeBGP{j: j, learned: learned}, rt: &fakeRoutes{j: j, table: map[netip.Prefix]route.Route{}},
		fw: &fakeFirewall{j: j}, cni: &fakeCNI{j: j}}
	r.src = &fakeSource{snap: Snapshot{
		BGP: bgp.Config{ASN: 64512, RouterID: netip.MustParseAddr("10.0.0.2"), ListenPort: 179, PodCIDRs: podCIDRs,
			ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/48")}},
		Peers:      []bgp.Peer{tor, node2},
		Namespaces: []policy.Namespace{{Name: "web"}},
		Pods: []policy.Pod{{Namespace: "web", Name: "api", Labels: map[string]string{"app": "api"},
			IPs: []netip.Addr{netip.MustParseAddr("10.244.1.5")}}},
	}}
	cfg := &config.Config{DataDir: t.TempDir(), CNIConfDir: t.TempDir()}
	cfg.Defaults()
	dp := Dataplane{NewSpeaker: r.bgp.new, Routes: r.rt, Firewall: r.fw, CNI: r.cni}
	r.a = newAgent(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), r.src, dp)
	if err := r.a.startSpeaker(context.Background(), r.src.snap.BGP); err != nil {
		t.Fatal(err)
	}
	j.take()
	return r
}

// sync runs one loop iteration and returns what it changed, in order.
func (r *rig) sync(resync bool) ([]string, error) {
	r.t.Helper()
	err := r.a.sync(context.Background(), resync)
	return r.j.take(), err
}

// step syncs, checks the changes, then syncs the same state again and
// checks that the second sync changed nothing.
func (r *rig) step(what string, want []string) {
	r.t.Helper()
	got, err := r.sync(false)
	if err != nil {
		r.t.Fatalf("%s: sync: %v", what, err)
	}
	if d := cmp.Diff(want, got); d != "" {
		r.t.Fatalf("%s: changes (-want +got):\n%s", what, d)
	}
	if again, err := r.sync(false); err != nil || len(again) > 0 {
		r.t.Fatalf("%s: the same state applied twice changed %q (err %v)", what, again, err)
	}
}

func TestDatapathBeforeAnnouncement(t *testing.T) {
	r := newRig(t)
	r.step("first sync", []string{
		"route replace blackhole 10.244.1.0/24",
		"route replace 10.244.2.0/24 via 10.0.0.3",
		"route replace blackhole fd00:10:244:1::/64",
		"conflist ranges [10.244.1.0/24 fd00:10:244:1::/64]",
		"nftables replace: 8 sets, 3 ingress, 3 egress",
		"bgp peers [10.0.0.1/65000 10.0.0.3/64512]",
		"bgp announce [10.244.1.0/24 fd00:10:244:1::/64] communities []",
	})
	if !r.src.lastReport().Ready {
		t.Fatal("the source was not told the node is ready")
	}
	if got := r.rt.String(); got != "10.244.2.0/24 via 10.0.0.3\nblackhole 10.244.1.0/24\nblackhole fd00:10:244:1::/64" {
		t.Fatalf("route table:\n%s", got)
	}
}

// Until routes, CNI config and policy are all in place once, the node's
// pod CIDRs are not announced; peers are configured all the same.
func TestNotReadyAnnouncesNothing(t *testing.T) {
	r := newRig(t)
	r.cni.fail = errDisk
	got, err := r.sync(false)
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("sync error %v, want the conflist's", err)
	}
	if slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "bgp announce") }) {
		t.Fatalf("announced without a CNI config: %q", got)
	}
	if !slices.Contains(got, "bgp peers [10.0.0.1/65000 10.0.0.3/64512]") || r.src.lastReport().Ready {
		t.Fatalf("peers not configured, or ready reported: %q %+v", got, r.src.lastReport())
	}
	r.cni.fail = nil
	r.step("conflist written", []string{
		"conflist ranges [10.244.1.0/24 fd00:10:244:1::/64]",
		"bgp announce [10.244.1.0/24 fd00:10:244:1::/64] communities []",
	})
}

// A deleted Node withdraws the node's pod CIDRs and touches nothing else:
// routes, peers, policy and the CNI config stay. Its return announces them
// again.
func TestNodeDeletedWithdrawsOwnCIDRsOnly(t *testing.T) {
	r := newRig(t)
	r.sync(false)
	r.src.snap.NodeGone = true
	r.step("node deleted", []string{"bgp announce [] communities []"})
	if got := r.bgp.current().peers; len(got) != 2 {
		t.Fatalf("peers changed: %v", got)
	}
	r.src.snap.NodeGone = false
	r.step("node back", []string{"bgp announce [10.244.1.0/24 fd00:10:244:1::/64] communities []"})
}

// A speaker that cannot start with the new settings falls back to the old
// ones; routes and policy go on being synced, and the error is reported.
func TestSpeakerRestartFailureKeepsSyncing(t *testing.T) {
	r := newRig(t)
	r.sync(false)
	r.bgp.refuseASN = 65099
	r.src.snap.BGP.ASN = 65099
	r.src.snap.Pods = append(r.src.snap.Pods, policy.Pod{Namespace: "web", Name: "api2", IPs: []netip.Addr{netip.MustParseAddr("10.244.1.6")}})
	got, err := r.sync(false)
	if err == nil || !strings.Contains(err.Error(), "asn 65099 refused") {
		t.Fatalf("sync error %v, want the speaker's", err)
	}
	want := []string{
		"bgp stop asn 64512",
		"bgp start asn 65099 refused",
		"bgp start asn 64512",
		"nftables incremental: 8 sets, 3 ingress, 3 egress",
		"bgp peers [10.0.0.1/65000 10.0.0.3/64512]",
		"bgp announce [10.244.1.0/24 fd00:10:244:1::/64] communities []",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("changes (-want +got):\n%s", d)
	}
	if r.a.bgpCfg.ASN != 64512 {
		t.Fatalf("running settings %d, want the old AS", r.a.bgpCfg.ASN)
	}
	if !strings.Contains(r.rt.String(), "10.244.2.0/24 via 10.0.0.3") {
		t.Fatalf("learned route lost:\n%s", r.rt)
	}
}

// A changed AS restarts the speaker with it; communities go through Set.
func TestSettingsAndCommunities(t *testing.T) {
	r := newRig(t)
	r.sync(false)
	r.src.snap.BGP.ASN = 65001
	r.src.snap.Communities = []uint32{65000<<16 | 100}
	r.step("new AS and a community", []string{
		"bgp stop asn 64512",
		"bgp start asn 65001",
		"bgp peers [10.0.0.1/65000 10.0.0.3/64512]",
		"bgp announce [10.244.1.0/24 fd00:10:244:1::/64] communities [4259840100]",
	})
}

// The periodic resync makes the route table and the firewall distrust
// what they remember (the firewall replaces its table whole), and has the
// speaker reconcile with GoBGP, so that the Set after it repairs a change
// made behind the agent's back. A poked sync does neither.
func TestResyncInvalidatesAndReconciles(t *testing.T) {
	r := newRig(t)
	r.sync(false)
	r.bgp.current().tampered = true
	if got, _ := r.sync(false); len(got) != 0 {
		t.Fatalf("a poked sync repaired: %q", got)
	}
	got, err := r.sync(true)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"nftables replace: 8 sets, 3 ingress, 3 egress",
		"bgp reconcile: peers changed behind the agent's back",
		"bgp peers [10.0.0.1/65000 10.0.0.3/64512]",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("resync (-want +got):\n%s", d)
	}
	if r.rt.invalidated != 1 {
		t.Fatalf("route table invalidated %d times, want 1", r.rt.invalidated)
	}
}

// A policy the firewall refuses fails the sync (and it is retried), but
// never blocks routes or announcements once the node was ready.
func TestFirewallFailureAfterReady(t *testing.T) {
	r := newRig(t)
	r.sync(false)
	r.fw.fail = errDisk
	r.src.snap.Policies = []policy.Policy{{Namespace: "web", Name: "deny", Ingress: true}}
	r.bgp.current().learned = append(learned, bgp.Route{Prefix: netip.MustParsePrefix("10.244.3.0/24"), NextHops: []netip.Addr{netip.MustParseAddr("10.0.0.4")}})
	got, err := r.sync(false)
	if err == nil {
		t.Fatal("a refused policy did not fail the sync")
	}
	if d := cmp.Diff([]string{"route replace 10.244.3.0/24 via 10.0.0.4", "nftables refused"}, got); d != "" {
		t.Fatalf("changes (-want +got):\n%s", d)
	}
	if !r.src.lastReport().Ready {
		t.Fatal("a node that was ready stopped announcing")
	}
}

// A peer pointing a route at a pod of this node's CIDR gets nothing
// installed through it; the other routes go in.
func TestNextHopInsidePodCIDRsIsRefused(t *testing.T) {
	r := newRig(t)
	r.bgp.current().learned = append(learned, bgp.Route{Prefix: netip.MustParsePrefix("10.244.3.0/24"), NextHops: []netip.Addr{netip.MustParseAddr("10.244.1.2")}})
	if _, err := r.sync(false); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(r.rt.String(), "10.244.3.0/24") {
		t.Fatalf("a route via a pod was installed:\n%s", r.rt)
	}
	if !strings.Contains(r.rt.String(), "10.244.2.0/24 via 10.0.0.3") {
		t.Fatalf("the good route is missing:\n%s", r.rt)
	}
}

// /readyz says what holds now, not what held once: a CNI config that cannot
// be written makes the node unready, and it is ready again once written.
func TestReadinessFollowsTheLastSync(t *testing.T) {
	r := newRig(t)
	present := func() error { return nil }
	if err := r.a.metrics.readiness(present); err == nil {
		t.Fatal("ready before the first sync")
	}
	r.sync(false)
	if err := r.a.metrics.readiness(present); err != nil {
		t.Fatalf("not ready after a complete sync: %v", err)
	}
	r.cni.fail, r.cni.conf = errDisk, nil
	r.sync(false)
	if err := r.a.metrics.readiness(present); err == nil || !strings.Contains(err.Error(), "CNI config") {
		t.Fatalf("readiness with the conflist unwritable: %v", err)
	}
	r.cni.fail = nil
	r.sync(false)
	if err := r.a.metrics.readiness(present); err != nil {
		t.Fatalf("not ready after the conflist was written again: %v", err)
	}
	if err := r.a.metrics.readiness(r.a.confListPresent); err == nil {
		t.Fatal("ready while the conflist file is missing")
	}
}

// A policy the firewall refuses is reported to the source and counted; it
// does not fail the sync (its pods are isolated), and the node stays ready.
func TestRefusedPolicyIsReported(t *testing.T) {
	r := newRig(t)
	r.fw.refuse = map[string]bool{"web/bad": true}
	r.src.snap.Policies = []policy.Policy{{Namespace: "web", Name: "bad", Ingress: true}}
	if _, err := r.sync(false); err != nil {
		t.Fatalf("a refused policy failed the sync: %v", err)
	}
	st := r.src.lastReport()
	if len(st.RefusedPolicies) != 1 || st.RefusedPolicies[0].Name != "bad" || !st.Ready {
		t.Fatalf("status %+v", st)
	}
	if got := testutil.ToFloat64(r.a.metrics.refused.WithLabelValues("web", "bad")); got != 1 {
		t.Fatalf("petrel_policy_refused{web,bad} = %v", got)
	}
	r.fw.refuse = nil
	r.src.snap.Policies = append(r.src.snap.Policies, policy.Policy{Namespace: "web", Name: "other", Ingress: true})
	r.sync(false)
	if st := r.src.lastReport(); len(st.RefusedPolicies) != 0 {
		t.Fatalf("still reported refused: %+v", st.RefusedPolicies)
	}
}

// Addresses of pods that vanished without a DEL are released at the
// periodic resync only, before the policy reads the store, and counted.
func TestResyncReleasesOrphanedAddresses(t *testing.T) {
	r := newRig(t)
	calls := 0
	r.a.dp.ReleaseOrphans = func(time.Time) ([]ipam.Allocation, error) {
		calls++
		r.j.add("release orphans")
		if calls > 1 {
			return nil, nil
		}
		return []ipam.Allocation{{IP: netip.MustParseAddr("10.244.1.9"), Owner: ipam.Owner{ContainerID: "gone", IfName: "eth0"}}}, nil
	}
	r.sync(false)
	if calls != 0 {
		t.Fatal("a poked sync looked for orphans")
	}
	got, err := r.sync(true)
	if err != nil {
		t.Fatal(err)
	}
	if calls != 1 || got[0] != "release orphans" {
		t.Fatalf("resync: %d calls, changes %q; want the release first", calls, got)
	}
	r.sync(true)
	if n := testutil.ToFloat64(r.a.metrics.orphans); n != 1 {
		t.Fatalf("petrel_orphan_addresses_released_total = %v, want 1", n)
	}
}

// Service addresses go out with the pod CIDRs. A drain marks everything at
// once, withdraws the Service addresses only after the delay, keeps the
// pod CIDRs; its end announces everything as before.
func TestDrainWithdrawsServicesAfterTheDelay(t *testing.T) {
	r := newRig(t)
	r.sync(false)
	lb := []netip.Prefix{netip.MustParsePrefix("10.250.0.1/32")}
	scope := []netip.Prefix{netip.MustParsePrefix("10.250.0.0/24")}
	r.src.snap.Services, r.src.snap.ServiceScope = lb, scope
	pods := "[10.244.1.0/24 fd00:10:244:1::/64] communities []"
	r.step("a Service address", []string{"bgp announce " + pods + " services [10.250.0.1/32] in [10.250.0.0/24] drain false"})
	r.src.snap.Drain, r.src.snap.DrainDelay = true, time.Hour
	r.step("drain begins", []string{"bgp announce " + pods + " services [10.250.0.1/32] in [10.250.0.0/24] drain true"})
	if s, d := testutil.ToFloat64(r.a.metrics.services), testutil.ToFloat64(r.a.metrics.draining); s != 1 || d != 1 {
		t.Fatalf("metrics while draining: %v addresses, draining %v", s, d)
	}
	r.a.drainAt = time.Now().Add(-time.Hour)
	r.step("drain delay over", []string{"bgp announce " + pods + " services [] in [10.250.0.0/24] drain true"})
	if s := testutil.ToFloat64(r.a.metrics.services); s != 0 {
		t.Fatalf("%v Service addresses announced after the drain delay", s)
	}
	r.src.snap.Drain = false
	r.step("drain ended", []string{"bgp announce " + pods + " services [10.250.0.1/32] in [10.250.0.0/24] drain false"})
}

// Between full syncs, changed best paths are programmed on their own: only
// the routes that changed are touched, nothing else runs, the checks of a
// full sync hold (a next hop into the pod CIDRs takes the route out), and
// the node's own pod CIDRs stay their blackholes whatever is learned.
func TestLearnedRoutesAloneBetweenSyncs(t *testing.T) {
	r := newRig(t)
	if _, err := r.sync(false); err != nil {
		t.Fatal(err)
	}
	sp := r.bgp.current()
	fast := func() []string {
		t.Helper()
		if err := r.a.syncLearned(context.Background()); err != nil {
			t.Fatal(err)
		}
		return r.j.take()
	}
	if got := fast(); len(got) != 0 {
		t.Fatalf("nothing changed, yet: %v", got)
	}
	three := bgp.Route{Prefix: netip.MustParsePrefix("10.244.3.0/24"), NextHops: []netip.Addr{netip.MustParseAddr("10.0.0.4")}}
	own := bgp.Route{Prefix: podCIDRs[0], NextHops: []netip.Addr{netip.MustParseAddr("10.0.0.4")}}
	sp.learned = append(slices.Clone(learned), three, own)
	if d := cmp.Diff([]string{"route replace 10.244.3.0/24 via 10.0.0.4"}, fast()); d != "" {
		t.Fatalf("changes (-want +got):\n%s", d)
	}
	sp.learned = []bgp.Route{{Prefix: learned[0].Prefix, NextHops: []netip.Addr{netip.MustParseAddr("10.244.1.9")}}, three}
	if d := cmp.Diff([]string{"route delete 10.244.2.0/24 via 10.0.0.3"}, fast()); d != "" {
		t.Fatalf("a next hop into a pod: changes (-want +got):\n%s", d)
	}
	sp.learned = nil
	if d := cmp.Diff([]string{"route delete 10.244.3.0/24 via 10.0.0.4"}, fast()); d != "" {
		t.Fatalf("withdrawn: changes (-want +got):\n%s", d)
	}
	if !strings.Contains(r.rt.String(), "blackhole "+podCIDRs[0].String()) {
		t.Fatalf("the pod CIDR's blackhole is gone:\n%s", r.rt)
	}
	if got, _ := r.sync(false); len(got) != 0 {
		t.Fatalf("the full sync after the fast ones changed: %v", got)
	}
}

// A restarted agent keeps the learned routes of the one before it while
// its own sessions come up, and removes those no peer brought back once
// every peer has been Established for startSettle.
func TestRestartKeepsLearnedRoutesUntilPeersSettle(t *testing.T) {
	r := newRig(t)
	r.a.keep.until = time.Now().Add(startKeepMax)
	old := route.Route{Prefix: netip.MustParsePrefix("10.244.9.0/24"), NextHops: []netip.Addr{netip.MustParseAddr("10.0.0.9")}}
	r.rt.table[old.Prefix] = old
	if _, err := r.sync(true); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.rt.String(), old.String()) {
		t.Fatalf("the previous agent's route was removed before any session was up:\n%s", r.rt)
	}
	// The fake's peers are Established once Set configured them: the
	// settle time starts now, and the route stays during it.
	if got, _ := r.sync(false); slices.ContainsFunc(got, func(l string) bool { return strings.HasPrefix(l, "route delete") }) {
		t.Fatalf("removed during the settle time: %v", got)
	}
	r.a.keep.allUp = time.Now().Add(-startSettle)
	got, _ := r.sync(false)
	if d := cmp.Diff([]string{"route delete " + old.String()}, got); d != "" {
		t.Fatalf("after the settle time (-want +got):\n%s", d)
	}
	if !r.a.keep.until.IsZero() {
		t.Fatal("still keeping")
	}
}
