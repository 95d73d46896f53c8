package policy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/policycases"
	"github.com/petrelnet/petrel/policy"
)

// policyNode is one node namespace with pods wired by the real CNI binary
// and Petrel's nftables table programmed by the real syncer.
type policyNode struct {
	t       *testing.T
	ns      netnstest.NS
	dataDir string
	syncer  *policy.Syncer
	pods    map[string]*testPod
}

type testPod struct {
	ns  netnstest.NS
	pod policy.Pod
}

func newPolicyNode(t *testing.T) *policyNode {
	netnstest.RequireRoot(t)
	n := &policyNode{t: t, ns: netnstest.New(t, "pnode"), dataDir: t.TempDir(), pods: map[string]*testPod{}}
	netnstest.MustIP(t, n.ns, "addr", "add", "10.99.0.1/32", "dev", "lo")
	n.syncer = n.newSyncer()
	return n
}

func (n *policyNode) newSyncer() *policy.Syncer {
	h, err := netns.GetFromName(n.ns.Name)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { h.Close() })
	s, err := policy.NewSyncer(h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		n.t.Fatal(err)
	}
	return s
}

// addPod wires a pod and starts TCP and UDP echo servers on 80 and 81 in it.
func (n *policyNode) addPod(namespace, name string, labels map[string]string) *testPod {
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"petrel","type":"petrel","ipam":{"ranges":["10.244.1.0/24"],"dataDir":%q}}`, n.dataDir)
	p := &testPod{ns: netnstest.New(n.t, "pod")}
	cmd := exec.Command(filepath.Join(cniDir, "petrel"))
	cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + namespace + "-" + name, "CNI_NETNS=" + p.ns.Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + cniDir}
	cmd.Stdin = strings.NewReader(conf)
	var out strings.Builder
	cmd.Stdout = &out
	if err := n.ns.Start(cmd); err != nil {
		n.t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		n.t.Fatalf("CNI ADD: %v %s", err, out.String())
	}
	var res struct{ IPs []struct{ Address string } }
	json.Unmarshal([]byte(out.String()), &res)
	ip := netip.MustParsePrefix(res.IPs[0].Address).Addr()
	p.pod = policy.Pod{Namespace: namespace, Name: name, Labels: labels, IPs: []netip.Addr{ip},
		Ports: []policy.NamedPort{{Name: "serve-80-tcp", Protocol: policy.TCP, Port: 80}, {Name: "serve-81-udp", Protocol: policy.UDP, Port: 81}}}
	p.serve(n.t)
	n.pods[namespace+"/"+name] = p
	return p
}

func (p *testPod) serve(t *testing.T) {
	var ln net.Listener
	var pc net.PacketConn
	err := p.ns.Do(func() (err error) {
		if ln, err = net.Listen("tcp", ":80"); err != nil {
			return err
		}
		pc, err = net.ListenPacket("udp", ":81")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close(); pc.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "ok")
			c.Close()
		}
	}()
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(buf[:n], from)
		}
	}()
}

// probePort hands every probe a source port of its own. With a random
// ephemeral port, a probe that must be dropped now could reuse the port of
// an earlier probe between the same pods that was allowed, whose conntrack
// entry (30 s for UDP) the established/related rule then accepts.
var probePort atomic.Uint32

// reach sends a real connection attempt from one pod to another.
func (n *policyNode) reach(from, to string, proto policy.Protocol) bool {
	src, dst := n.pods[from], n.pods[to]
	addr := net.JoinHostPort(dst.pod.IPs[0].String(), map[policy.Protocol]string{policy.TCP: "80", policy.UDP: "81"}[proto])
	port := 20000 + int(probePort.Add(1)%40000)
	d := net.Dialer{Timeout: 250 * time.Millisecond, LocalAddr: &net.TCPAddr{Port: port}}
	if proto == policy.UDP {
		d.LocalAddr = &net.UDPAddr{Port: port}
	}
	var c net.Conn
	err := src.ns.Do(func() (err error) {
		c, err = d.Dial(map[policy.Protocol]string{policy.TCP: "tcp", policy.UDP: "udp"}[proto], addr)
		return err
	})
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if proto == policy.UDP {
		c.Write([]byte("ok"))
	}
	buf := make([]byte, 2)
	_, err = io.ReadFull(c, buf)
	return err == nil && string(buf) == "ok"
}

func (n *policyNode) input(policies ...policy.Policy) policy.Input {
	in := policy.Input{Namespaces: []policy.Namespace{{Name: "x", Labels: map[string]string{"ns": "x"}}, {Name: "y", Labels: map[string]string{"ns": "y"}}}, Policies: policies}
	for _, p := range n.pods {
		in.Pods = append(in.Pods, p.pod)
	}
	return in
}

// sync compiles in and applies it; full makes the syncer replace the table
// whole, as the agent's periodic resync does.
func (n *policyNode) sync(in policy.Input, full bool) *policy.Desired {
	n.t.Helper()
	d := policy.Compile(in)
	if full {
		n.syncer.Invalidate()
	}
	if err := n.syncer.Sync(d); err != nil {
		n.t.Fatalf("sync: %v", err)
	}
	return d
}

// check probes every ordered pair of pods with real packets and compares
// the result with the compiler's own evaluation.
func (n *policyNode) check(d *policy.Desired, proto policy.Protocol, allowed func(from, to string) bool) {
	n.t.Helper()
	for from, fp := range n.pods {
		for to, tp := range n.pods {
			if from == to {
				continue
			}
			want := allowed(from, to)
			if model := d.Allowed(fp.pod.IPs[0], tp.pod.IPs[0], proto, map[policy.Protocol]uint16{policy.TCP: 80, policy.UDP: 81}[proto]); model != want {
				n.t.Errorf("%s -> %s proto %d: compiler says %v, test wants %v", from, to, proto, model, want)
			}
			if got := n.reach(from, to, proto); got != want {
				n.t.Errorf("%s -> %s proto %d: packets say %v, want %v", from, to, proto, got, want)
			}
		}
	}
}

func TestPolicyWithRealPackets(t *testing.T) {
	netnstest.RequireTool(t, "nft")
	n := newPolicyNode(t)
	n.addPod("x", "a", map[string]string{"pod": "a"})
	n.addPod("x", "b", map[string]string{"pod": "b"})
	n.addPod("y", "c", map[string]string{"pod": "c"})
	all := func(string, string) bool { return true }

	d := n.sync(n.input(), true)
	n.check(d, policy.TCP, all)

	denyX := policy.Policy{Namespace: "x", Name: "deny-ingress", Ingress: true}
	d = n.sync(n.input(denyX), false)
	n.check(d, policy.TCP, func(f, to string) bool { return !strings.HasPrefix(to, "x/") })

	allowY := policy.Policy{Namespace: "x", Name: "allow-y", PodSelector: policy.Selector{MatchLabels: map[string]string{"pod": "a"}}, Ingress: true,
		IngressRules: []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: &policy.Selector{MatchLabels: map[string]string{"ns": "y"}}}},
			Ports: []policy.Port{{Protocol: policy.TCP, Name: "serve-80-tcp"}}}}}
	d = n.sync(n.input(denyX, allowY), false)
	n.check(d, policy.TCP, func(f, to string) bool { return !strings.HasPrefix(to, "x/") || (to == "x/a" && f == "y/c") })
	n.check(d, policy.UDP, func(f, to string) bool { return !strings.HasPrefix(to, "x/") })

	// Relabel: b joins the selected pods; only set elements change.
	n.pods["x/b"].pod.Labels = map[string]string{"pod": "a"}
	d = n.sync(n.input(denyX, allowY), false)
	n.check(d, policy.TCP, func(f, to string) bool { return !strings.HasPrefix(to, "x/") || f == "y/c" })

	// The policy changes: now from x, not y.
	allowY.IngressRules[0].Peers[0].NamespaceSelector.MatchLabels["ns"] = "x"
	d = n.sync(n.input(denyX, allowY), false)
	n.check(d, policy.TCP, func(f, to string) bool { return !strings.HasPrefix(to, "x/") || strings.HasPrefix(f, "x/") })

	// An agent restart: a new syncer replaces the table in one transaction
	// with the same content; what was denied stays denied throughout.
	before, _ := n.ns.Run("nft", "list", "table", "inet", policy.TableName)
	n.syncer = n.newSyncer()
	if n.reach("y/c", "x/a", policy.TCP) {
		t.Fatal("traffic allowed while the new agent had not synced yet")
	}
	d = n.sync(n.input(denyX, allowY), true)
	after, _ := n.ns.Run("nft", "list", "table", "inet", policy.TableName)
	if normalizeHandles(before) != normalizeHandles(after) {
		t.Fatalf("table changed across a restart:\n%s\n---\n%s", before, after)
	}
	n.check(d, policy.TCP, func(f, to string) bool { return !strings.HasPrefix(to, "x/") || strings.HasPrefix(f, "x/") })

	// Deleting every policy opens everything again.
	d = n.sync(n.input(), false)
	n.check(d, policy.TCP, all)
}

// normalizeHandles drops rule handles and sorts the table's set and chain
// blocks: the kernel lists sets in creation order, which differs between a
// table built whole and one built up incrementally.
func normalizeHandles(s string) string {
	var lines []string
	for l := range strings.Lines(s) {
		if i := strings.Index(l, " # handle"); i >= 0 {
			l = l[:i]
		}
		lines = append(lines, strings.TrimRight(l, "\n"))
	}
	blocks := strings.Split(strings.Join(lines, "\n"), "\n\n")
	slices.Sort(blocks)
	return strings.Join(blocks, "\n\n")
}

// TestMasquerade: a pod reaching outside the cluster leaves with the node's
// address; a pod reaching another pod keeps its own.
func TestMasquerade(t *testing.T) {
	netnstest.RequireTool(t, "nft")
	n := newPolicyNode(t)
	outside := netnstest.New(t, "outside")
	netnstest.MustIP(t, netnstest.NS{}, "link", "add", "up0", "netns", n.ns.Name, "type", "veth", "peer", "name", "up0", "netns", outside.Name)
	netnstest.MustIP(t, n.ns, "addr", "add", "10.98.0.1/24", "dev", "up0")
	netnstest.MustIP(t, n.ns, "link", "set", "up0", "up")
	netnstest.MustIP(t, outside, "addr", "add", "10.98.0.2/24", "dev", "up0")
	netnstest.MustIP(t, outside, "link", "set", "up0", "up")
	a := n.addPod("x", "a", nil)
	b := n.addPod("x", "b", nil)
	in := n.input()
	in.Masquerade = true
	in.PodCIDRs = []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24")}
	in.NoMasquerade = []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16")}
	n.sync(in, true)

	if got := labtest.SeenAs(t, outside, labtest.Pod{Name: "a", NS: a.ns}, "10.98.0.2:9000"); got != "10.98.0.1" {
		t.Fatalf("outside saw the pod as %s, want the node's 10.98.0.1", got)
	}
	if got := labtest.SeenAs(t, b.ns, labtest.Pod{Name: "a", NS: a.ns}, net.JoinHostPort(b.pod.IPs[0].String(), "9001")); got != a.pod.IPs[0].String() {
		t.Fatalf("pod b saw pod a as %s, want %s (no NAT between pods)", got, a.pod.IPs[0])
	}
}

// watch starts policy.Watch on the node until the test ends, and returns
// what it reports.
func (n *policyNode) watch() (drifts chan string, lost chan struct{}) {
	n.t.Helper()
	h, err := netns.GetFromName(n.ns.Name)
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { h.Close() })
	drifts, lost = make(chan string, 64), make(chan struct{}, 64)
	stop, err := policy.Watch(h, func(obj string) { drifts <- obj }, func() { lost <- struct{}{} })
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(stop)
	return drifts, lost
}

// TestWatchSeesOnlyOthersChanges: changes Petrel's own syncs make are not
// drift; a rule or the table deleted by hand is, at once.
func TestWatchSeesOnlyOthersChanges(t *testing.T) {
	netnstest.RequireTool(t, "nft")
	n := newPolicyNode(t)
	drifts, _ := n.watch()
	n.addPod("x", "a", map[string]string{"pod": "a"})
	n.sync(n.input(), true)
	n.sync(n.input(policy.Policy{Namespace: "x", Name: "deny", Ingress: true}), false) // rules added and removed by Petrel
	n.sync(n.input(), false)
	select {
	case obj := <-drifts:
		t.Fatalf("Petrel's own sync reported as drift (%s)", obj)
	case <-time.After(300 * time.Millisecond):
	}
	out, err := n.ns.Run("nft", "-a", "list", "chain", "inet", policy.TableName, "forward")
	if err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	handle := ""
	for l := range strings.Lines(out) {
		if strings.Contains(l, "jump ingress") {
			handle = strings.TrimSpace(l[strings.LastIndex(l, "handle ")+len("handle "):])
		}
	}
	for _, cmd := range [][]string{{"delete", "rule", "inet", policy.TableName, "forward", "handle", handle}, {"delete", "table", "inet", policy.TableName}} {
		if out, err := n.ns.Run("nft", cmd...); err != nil {
			t.Fatalf("nft %v: %v %s", cmd, err, out)
		}
		select {
		case obj := <-drifts:
			t.Logf("nft %s %s: drift reported (%s)", cmd[0], cmd[1], obj)
		case <-time.After(2 * time.Second):
			t.Fatalf("nft %v: no drift reported", cmd)
		}
		n.sync(n.input(), true) // what the agent does next: replace the table
	}
}

// TestWatchSurvivesALargeOwnTransaction: Petrel's own first transaction
// at scale (here 5,000 pods and 500 policies, about 150,000 set elements:
// far more notifications than a default socket buffer holds) is not drift,
// and the watch still reports a change by hand afterwards. With the
// default buffer the socket overflowed, the end of Petrel's own transaction
// read as someone else's change, and the monitor was dead from then on.
func TestWatchSurvivesALargeOwnTransaction(t *testing.T) {
	netnstest.RequireTool(t, "nft")
	n := newPolicyNode(t)
	drifts, lost := n.watch()
	d := n.sync(policycases.Synthetic(5000, 500, netip.MustParseAddr("10.244.0.2")), true)
	elems := 0
	for _, s := range d.Sets {
		elems += len(s.Elems)
	}
	t.Logf("%d sets, %d elements", len(d.Sets), elems)
	select {
	case obj := <-drifts:
		t.Fatalf("Petrel's own large transaction reported as drift (%s)", obj)
	case <-lost:
		t.Fatal("Petrel's own large transaction overflowed the monitor")
	case <-time.After(2 * time.Second):
	}
	if out, err := n.ns.Run("nft", "delete", "table", "inet", policy.TableName); err != nil {
		t.Fatalf("nft: %v %s", err, out)
	}
	select {
	case <-drifts:
	case <-time.After(5 * time.Second):
		t.Fatal("a table deleted by hand after the large transaction: no drift reported")
	}
}

// TestRefusedPolicyIsIsolatedOthersApply: a policy the kernel refuses
// (corrupted through the test hook, since the compiler's own output is
// always programmable) isolates the pods it selects with nothing allowed;
// the other policies are applied; the refusal names the policy and carries
// the kernel's error.
func TestRefusedPolicyIsIsolatedOthersApply(t *testing.T) {
	netnstest.RequireTool(t, "nft")
	n := newPolicyNode(t)
	n.addPod("x", "a", map[string]string{"pod": "a"})
	n.addPod("x", "b", map[string]string{"pod": "b"})
	n.addPod("y", "c", map[string]string{"pod": "c"})
	allowFromY := policy.Policy{Namespace: "x", Name: "allow-from-y", PodSelector: policy.Selector{MatchLabels: map[string]string{"pod": "a"}}, Ingress: true,
		IngressRules: []policy.Rule{{Peers: []policy.Peer{{NamespaceSelector: &policy.Selector{MatchLabels: map[string]string{"ns": "y"}}}}}}}
	denyY := policy.Policy{Namespace: "y", Name: "deny", Ingress: true}
	fw := policy.NewFirewall(n.syncer, slog.New(slog.NewTextHandler(io.Discard, nil)))
	fw.BreakForTest = func(d *policy.Desired) {
		for _, st := range d.Ingress {
			if st.Owner != "x/allow-from-y" {
				continue
			}
			for _, m := range st.Matches {
				if s := d.Sets[m.Set]; s.Kind == policy.DstSet && len(s.Elems) > 0 {
					e := s.Elems[0]
					e.PortHi = e.PortLo // inside the first element: the kernel refuses the overlap
					s.Elems = append(s.Elems, e)
				}
			}
		}
	}
	refused, err := fw.Sync(n.input(allowFromY, denyY))
	if err != nil {
		t.Fatalf("no table applied: %v", err)
	}
	if len(refused) != 1 || refused[0].Namespace+"/"+refused[0].Name != "x/allow-from-y" || refused[0].Err == nil {
		t.Fatalf("refused %+v, want x/allow-from-y with the kernel's error", refused)
	}
	t.Logf("kernel's error: %v", refused[0].Err)
	want := map[string]bool{
		"y/c -> x/a": false, // the refused policy's pod: isolated, nothing allowed
		"x/b -> x/a": false,
		"x/a -> x/b": true, // not selected by anything
		"y/c -> x/b": true,
		"x/a -> y/c": false, // the other policy still applies
		"x/b -> y/c": false,
	}
	for pair, allowed := range want {
		from, to, _ := strings.Cut(pair, " -> ")
		if got := n.reach(from, to, policy.TCP); got != allowed {
			t.Errorf("%s: reached %v, want %v", pair, got, allowed)
		}
	}
}

// TestWatchInOwnPIDNamespace runs the watch test again in a PID namespace
// of its own, as the agent runs in a pod without hostPID: the kernel names
// the committing thread by its global ID there, which the process cannot
// find in its /proc, and Petrel's own syncs must still not look like drift.
func TestWatchInOwnPIDNamespace(t *testing.T) {
	netnstest.RequireRoot(t)
	unshare := netnstest.RequireTool(t, "unshare")
	cmd := exec.Command(unshare, "--pid", "--fork", "--mount-proc", os.Args[0], "-test.run", "^TestWatchSeesOnlyOthersChanges$", "-test.v")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestWatchSeesOnlyOthersChanges") {
		t.Fatalf("in its own PID namespace: %v\n%s", err, out)
	}
}
