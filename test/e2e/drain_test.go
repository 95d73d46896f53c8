package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/petrelnet/petrel/internal/testkit/kubelab"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// rxPackets is a link's received-packet counter.
func rxPackets(t *testing.T, ns netnstest.NS, link string) uint64 {
	var links []struct {
		Stats struct {
			RX struct {
				Packets uint64 `json:"packets"`
			} `json:"rx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal([]byte(mustRun(t, ns, "ip", "-s", "-j", "link", "show", link)), &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s -j link show %s: %v", link, err)
	}
	return links[0].Stats.RX.Packets
}

// TestDrainAndRollingRestartLoseNothing: a Service with policy Cluster is
// reached through all three nodes (ECMP at the ToR) by a stream of UDP
// requests, 8 flows at 100 per second each. node1 is drained (RFC 8326):
// the ToR moves its flows to the other nodes at once, node1 withdraws the
// address after the drain delay, then leaves the network altogether —
// not one request lost. Then every agent is restarted, one after another,
// with the stream and pings between all pods running: nothing lost either.
func TestDrainAndRollingRestartLoseNothing(t *testing.T) {
	l, c := servicesLab(t, 3)
	ctx := context.Background()
	if err := c.Apply(ctx, kubelab.BGPConfigs, "default", map[string]any{"nodeToNodeMesh": false, "drainDelay": "2s"}); err != nil {
		t.Fatal(err)
	}
	// The ToR spreads flows by port too, so that each node carries some.
	mustRun(t, l.Tor, "sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1")
	var pods []labtest.Pod
	for i, n := range l.Nodes {
		p, err := c.AddPod(ctx, l, n, fmt.Sprintf("echo-%d", i+1), map[string]string{"app": "echo"})
		if err != nil {
			t.Fatal(err)
		}
		serve(t, p, 8080)
		if err := c.SetPodReady(ctx, p.Name, true); err != nil {
			t.Fatal(err)
		}
		pods = append(pods, p)
	}
	svc, err := c.CS.CoreV1().Services("default").Create(ctx, lbService("echo", corev1.ServiceExternalTrafficPolicyCluster), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var lb string
	wait.Until(t, 20*time.Second, "an address for the Service", func() bool {
		s, err := c.CS.CoreV1().Services("default").Get(ctx, svc.Name, metav1.GetOptions{})
		if err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
			lb = s.Status.LoadBalancer.Ingress[0].IP
		}
		return lb != ""
	})
	host, addr := lb+"/32", net.JoinHostPort(lb, "80")
	all := l.Nodes[0].Addr() + " " + l.Nodes[1].Addr() + " " + l.Nodes[2].Addr()
	wait.Equal(t, 20*time.Second, "the ToR routes the address via all three nodes", all, func() string { return l.FRR.NextHops(host) })
	wait.Until(t, 20*time.Second, "kube-proxy on every node has the address (TCP and UDP)", func() bool {
		for _, n := range l.Nodes {
			out, _ := n.NS.Run("nft", "list", "map", "ip", "kube-proxy", "service-ips")
			if !strings.Contains(out, lb+" . tcp . 80") || !strings.Contains(out, lb+" . udp . 80") {
				return false
			}
		}
		return true
	})

	stream := udpStream(t, l.External, addr)
	wait.Until(t, 5*time.Second, "the stream answered", func() bool { return stream.Answers() > 100 })
	n1 := l.Nodes[0]
	before := rxPackets(t, n1.NS, "eth1")
	time.Sleep(time.Second)
	if carried := rxPackets(t, n1.NS, "eth1") - before; carried < 50 {
		t.Fatalf("node1 received %d packets in a second: it carries none of the stream's flows, the drain would prove nothing", carried)
	}

	// Drain node1, as an operator would: the annotation, then the pods
	// evicted, then the node leaves.
	drained := time.Now()
	patch := []byte(`{"metadata":{"annotations":{"petrel.dev/drain":"true"}}}`)
	if _, err := c.CS.CoreV1().Nodes().Patch(ctx, n1.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	others := l.Nodes[1].Addr() + " " + l.Nodes[2].Addr()
	d := wait.Until(t, 10*time.Second, "node1 out of the ToR's ECMP set (its path prepended, GRACEFUL_SHUTDOWN)", func() bool { return l.FRR.NextHops(host) == others })
	t.Logf("node1 drained -> out of the ToR's ECMP set: %s", d)
	if out, _ := l.FRR.Vtysh("show bgp ipv4 unicast " + host); !strings.Contains(out, "Community: graceful-shutdown") || !strings.Contains(out, "65101 65101 65101 65101") {
		t.Fatalf("FRR's paths for %s should show node1's GRACEFUL_SHUTDOWN and prepend:\n%s", host, out)
	}
	zero := int64(0)
	evicted := time.Now()
	if err := c.CS.CoreV1().Pods("default").Delete(ctx, pods[0].Name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		t.Fatal(err)
	}
	wait.Until(t, 10*time.Second, "node1 withdraws the address after the drain delay", func() bool {
		out, _ := l.FRR.Vtysh("show bgp ipv4 unicast " + host)
		return !strings.Contains(out, "65101")
	})
	withdrawn := time.Now()
	t.Logf("node1 drained -> Service address withdrawn: %s (drainDelay 2s)", withdrawn.Sub(drained).Round(time.Millisecond))
	// The node leaves only once the evicted pod gets no more requests:
	// every kube-proxy has dropped it and forgotten its flows.
	var last uint64
	quiet := time.Now()
	wait.Until(t, 30*time.Second, "the evicted pod receives nothing for a second", func() bool {
		n := rxPackets(t, pods[0].NS, "eth0")
		if n != last {
			last, quiet = n, time.Now()
		}
		return time.Since(quiet) > time.Second
	})
	t.Logf("pod on node1 evicted -> no more requests reach it: %s", quiet.Sub(evicted).Round(time.Millisecond))
	linkDown := time.Now()
	mustRun(t, n1.NS, "ip", "link", "set", "eth1", "down")
	time.Sleep(2 * time.Second)
	sent, lost := stream.Finish()
	t.Logf("drain of node1, its pod evicted, its uplink down: %d requests over 8 flows, %d lost", sent, lost)
	if lost != 0 {
		at := stream.LostAt()
		t.Logf("lost between %s and %s after the drain annotation (withdrawn at %s, evicted at %s, quiet at %s, link down at %s)",
			at[0].Sub(drained), at[len(at)-1].Sub(drained), withdrawn.Sub(drained), evicted.Sub(drained), quiet.Sub(drained), linkDown.Sub(drained))
		// While the kube-proxies drop the evicted endpoint they delete its
		// UDP flows' conntrack entries (kube-proxy's own cleanup): a reply
		// in flight at that moment is not translated back. One such loss
		// in that window is kube-proxy's, not the drain's (seen once in
		// many CI runs, 1 of 5,024); any other loss fails.
		kubeProxy := 0
		for _, a := range at {
			if !a.Before(evicted) && !a.After(quiet) && !(a.After(withdrawn.Add(-100*time.Millisecond)) && a.Before(withdrawn.Add(time.Second))) {
				kubeProxy++
			}
		}
		if lost-kubeProxy != 0 || kubeProxy > 1 {
			t.Fatalf("%d of %d requests lost across the drain", lost, sent)
		}
		t.Logf("the one loss came while the kube-proxies dropped the evicted pod, away from the withdrawal: tolerated")
	}
	mustRun(t, n1.NS, "ip", "link", "set", "eth1", "up")
	// The kernel dropped the link's IPv6 address and both default routes.
	mustRun(t, n1.NS, "ip", "addr", "replace", n1.Addr6()+"/64", "dev", "eth1", "nodad")
	mustRun(t, n1.NS, "ip", "route", "replace", "default", "via", n1.TorAddr())
	mustRun(t, n1.NS, "ip", "-6", "route", "replace", "default", "via", n1.TorAddr6())
	if _, err := c.CS.CoreV1().Nodes().Patch(ctx, n1.Name, types.MergePatchType, []byte(`{"metadata":{"annotations":{"petrel.dev/drain":null}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 30*time.Second, "node1 back in the ECMP set, undrained", all, func() string { return l.FRR.NextHops(host) })
	var detail string
	if _, err := wait.For(30*time.Second, "every session Established again", func() bool { ok, d := l.Established(); detail = d; return ok }); err != nil {
		out, _ := n1.NS.Run("ip", "addr")
		r, _ := n1.NS.Run("ip", "route")
		t.Fatalf("%v: %s\n%s\n%s", err, detail, out, r)
	}

	// BFD on every IPv4 ToR session, both sides, beside graceful restart.
	for _, n := range l.Nodes {
		if err := c.Apply(ctx, kubelab.BGPPeers, "tor-"+n.Name+"-v4", map[string]any{"peerAddress": n.TorAddr(), "peerASN": int64(65000),
			"nodeSelector": map[string]any{"matchLabels": map[string]any{kubelab.NodeLabel: n.Name}},
			"holdTime":     "3s", "keepaliveTime": "1s", "connectRetry": "1s",
			"bfd": map[string]any{"enabled": true, "minTx": "100ms", "minRx": "100ms", "multiplier": int64(3)}}); err != nil {
			t.Fatal(err)
		}
		if out, err := l.FRR.Configure("router bgp 65000", "neighbor "+n.Addr()+" bfd", "neighbor "+n.Addr()+" bfd profile fast"); err != nil {
			t.Fatalf("FRR: %v %s", err, out)
		}
	}
	wait.Until(t, 30*time.Second, "BFD up with every node", func() bool {
		for _, n := range l.Nodes {
			if !labtest.BFDUp(l.FRR, n.Addr()) {
				return false
			}
		}
		ok, _ := l.Established()
		return ok
	})

	// Rolling restart of every agent under the stream and pings between
	// the remaining pods.
	p2, p3 := pods[1], pods[2]
	stream = udpStream(t, l.External, addr)
	pings := map[string]chan string{}
	for _, pair := range [][2]labtest.Pod{{p2, p3}, {p3, p2}} {
		for _, to := range []string{pair[1].IP, pair[1].IP6} {
			ch := make(chan string, 1)
			pings[pair[0].Name+" -> "+to] = ch
			go func() {
				out, _ := pair[0].NS.Run("ping", "-c", "2000", "-i", "0.01", "-W", "1", to)
				ch <- out
			}()
		}
	}
	time.Sleep(time.Second)
	start := time.Now()
	for _, n := range l.Nodes {
		if err := n.Agent.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := n.Agent.Start(); err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		wait.Until(t, 30*time.Second, n.Name+"'s sessions re-established by the new agent", func() bool {
			return l.FRR.UpFor(n.Addr()) < time.Since(restarted) && l.FRR.UpFor(n.Addr6()) < time.Since(restarted)
		})
		wait.Equal(t, 10*time.Second, n.Name+" announcing again", all, func() string { return l.FRR.NextHops(host) })
	}
	restart := time.Since(start)
	wait.Until(t, 10*time.Second, "BFD up again with every restarted agent", func() bool {
		for _, n := range l.Nodes {
			if !labtest.BFDUp(l.FRR, n.Addr()) {
				return false
			}
		}
		return true
	})
	if restart > 25*time.Second {
		t.Fatalf("the rolling restart took %s, longer than the pings run", restart)
	}
	sent, lost = stream.Finish()
	t.Logf("rolling restart of 3 agents in %s: UDP stream to the Service: %d sent, %d lost", restart.Round(time.Millisecond), sent, lost)
	if lost != 0 {
		t.Fatalf("%d of %d requests to the Service lost across the rolling restart", lost, sent)
	}
	for what, ch := range pings {
		out := <-ch
		t.Logf("ping %s: %s", what, lastLines(out, 2))
		if !strings.Contains(out, " 2000 received") {
			t.Fatalf("ping %s lost packets across the rolling restart:\n%s", what, out)
		}
	}
}

// udpStream starts 8 flows of 100 datagrams a second from ns to addr.
func udpStream(t *testing.T, ns netnstest.NS, addr string) *labtest.UDPStream {
	s, err := labtest.StartUDPStream(ns, addr, 8, 10*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
