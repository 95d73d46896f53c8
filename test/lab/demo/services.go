package main

import (
	"context"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/petrelnet/petrel/internal/testkit/kubelab"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// services shows the Service half: the EndpointSlice controller and a
// real kube-proxy on every node, a LoadBalancer Service given an address
// from a pool and announced where its endpoints are, a client behind the
// ToR answered, and node1 drained under a stream of requests.
func (d *demo) services() {
	if len(d.pods) < 3 {
		return
	}
	ctx := context.Background()
	l, k := d.lab, d.kube
	section("Services: kube-controller-manager (EndpointSlices) and kube-proxy (nftables) on every node, beside Petrel")
	err := k.StartEndpointSlices()
	if err == nil {
		d.proxies, err = k.StartProxies(l)
	}
	if err == nil {
		err = k.Apply(ctx, kubelab.LBPools, "demo", map[string]any{"cidrs": []any{"10.250.0.0/24"}})
	}
	if err == nil {
		err = k.Apply(ctx, kubelab.BGPConfigs, "default", map[string]any{"nodeToNodeMesh": false, "drainDelay": "3s"})
	}
	if err == nil {
		_, err = l.External.Run("ip", "route", "replace", "10.250.0.0/24", "via", "10.100.0.1")
	}
	if !d.check(err == nil, fmt.Sprintf("controller-manager, kube-proxies, LoadBalancerIPPool demo (10.250.0.0/24), drainDelay 3s: %s", errText(err))) {
		return
	}
	for _, p := range d.pods {
		stop, err := labtest.Serve(p, 8080)
		if err == nil {
			d.stops = append(d.stops, stop)
			err = d.label(ctx, p.Name)
		}
		if err == nil {
			err = k.SetPodReady(ctx, p.Name, true)
		}
		d.check(err == nil, fmt.Sprintf("%s serves its name on :8080, labelled role=web, Ready: %s", p.Name, errText(err)))
	}
	single := corev1.IPFamilyPolicySingleStack
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			IPFamilyPolicy: &single, Selector: map[string]string{"role": "web"},
			Ports: []corev1.ServicePort{{Name: "tcp", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP},
				{Name: "udp", Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolUDP}}}}
	section("Service default/web: type LoadBalancer, externalTrafficPolicy Local")
	t0 := time.Now()
	if _, err := k.CS.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); !d.check(err == nil, "create the Service: "+errText(err)) {
		return
	}
	var lb string
	_, err = wait.For(20*time.Second, "address", func() bool {
		s, err := k.CS.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
			lb = s.Status.LoadBalancer.Ingress[0].IP
		}
		return lb != ""
	})
	if !d.check(err == nil, fmt.Sprintf("status.loadBalancer.ingress: %s, from the pool, set by the agent holding the Lease petrel-lb-ipam", lb)) {
		return
	}
	host, addr := lb+"/32", net.JoinHostPort(lb, "80")
	var all []string
	for _, n := range l.Nodes {
		all = append(all, n.Addr())
	}
	_, err = wait.For(20*time.Second, "route", func() bool { return l.FRR.NextHops(host) == strings.Join(all, " ") })
	if d.check(err == nil, fmt.Sprintf("the ToR routes %s via every node with a ready endpoint (ECMP): %s", host, l.FRR.NextHops(host))) {
		d.took("LoadBalancer Service created -> its route at the ToR", time.Since(t0))
	}
	out, _ := l.FRR.Vtysh("show ip route " + host)
	fmt.Println(indent(out))
	var got string
	_, err = wait.For(10*time.Second, "answer", func() bool { got, err = labtest.Fetch(l.External, addr); return err == nil })
	if d.check(err == nil, fmt.Sprintf("the host outside the cluster (10.100.0.2) connects to %s: answered by %s", addr, got)) {
		d.took("LoadBalancer Service created -> answered from outside", time.Since(t0))
	}

	section("Readiness: pod1's only endpoint on node1 turns unready, then ready again")
	t0 = time.Now()
	others := strings.Join(all[1:], " ")
	err = k.SetPodReady(ctx, d.pods[0].Name, false)
	if err == nil {
		_, err = wait.For(10*time.Second, "withdrawn", func() bool { return l.FRR.NextHops(host) == others })
	}
	if d.check(err == nil, fmt.Sprintf("node1 withdrew %s: the ToR routes it via %s", host, l.FRR.NextHops(host))) {
		d.took("last local endpoint unready -> node1 withdrawn at the ToR", time.Since(t0))
	}
	err = k.SetPodReady(ctx, d.pods[0].Name, true)
	if err == nil {
		_, err = wait.For(10*time.Second, "back", func() bool { return l.FRR.NextHops(host) == strings.Join(all, " ") })
	}
	d.check(err == nil, "pod1 ready again: node1 announces again")
	// Petrel announces at once; kube-proxy on node1 delivers to pod1 again
	// only after its own sync (up to a second): the drain's stream starts
	// once it does, or it would count kube-proxy's lag as the drain's loss.
	_, err = wait.For(10*time.Second, "kube-proxy", func() bool { return localEndpoint(l.Nodes[0], "default/web/udp/udp", d.pods[0].IP) })
	d.check(err == nil, "node1's kube-proxy delivers the Service to pod1 again")
	d.drain(ctx, host, addr, others)
}

// localEndpoint reports whether kube-proxy on n sends the Service port's
// traffic (policy Local) to the pod at ip.
func localEndpoint(n *labtest.Node, port, ip string) bool {
	out, err := n.NS.Run("nft", "list", "table", "ip", "kube-proxy")
	if err != nil {
		return false
	}
	_, chain, ok := strings.Cut(out, "chain local-")
	for ok {
		name, body, _ := strings.Cut(chain, "{")
		body, _, _ = strings.Cut(body, "}")
		if strings.Contains(name, port) && strings.Contains(body, ip+":") {
			return true
		}
		_, chain, ok = strings.Cut(chain, "chain local-")
	}
	return false
}

// drain takes node1 out of service (RFC 8326) under a stream of requests.
func (d *demo) drain(ctx context.Context, host, addr, others string) {
	l, k := d.lab, d.kube
	n1 := l.Nodes[0]
	section("Drain: node1 annotated petrel.dev/drain=true under 8 UDP flows of 100 requests a second to %s", addr)
	if _, err := l.Tor.Run("sysctl", "-qw", "net.ipv4.fib_multipath_hash_policy=1"); err != nil {
		d.check(false, "ToR: spread flows by port: "+err.Error())
		return
	}
	stream, err := labtest.StartUDPStream(l.External, addr, 8, 10*time.Millisecond)
	if !d.check(err == nil, "start the stream: "+errText(err)) {
		return
	}
	time.Sleep(time.Second)
	t0 := time.Now()
	_, err = k.CS.CoreV1().Nodes().Patch(ctx, n1.Name, types.MergePatchType, []byte(`{"metadata":{"annotations":{"petrel.dev/drain":"true"}}}`), metav1.PatchOptions{})
	if err == nil {
		_, err = wait.For(10*time.Second, "drained", func() bool { return l.FRR.NextHops(host) == others })
	}
	if d.check(err == nil, "node1's paths now carry GRACEFUL_SHUTDOWN and a longer AS path: the ToR moved the flows to node2 and node3") {
		d.took("drain annotation -> node1 out of the ToR's ECMP set", time.Since(t0))
	}
	out, _ := l.FRR.Vtysh("show bgp ipv4 unicast " + host)
	fmt.Println(indent(out))
	_, err = wait.For(10*time.Second, "withdrawn", func() bool {
		out, _ := l.FRR.Vtysh("show bgp ipv4 unicast " + host)
		return !strings.Contains(out, fmt.Sprint(n1.ASN()))
	})
	if d.check(err == nil, "after drainDelay (3s) node1 withdrew the Service address") {
		d.took("drain annotation -> Service address withdrawn by node1", time.Since(t0))
	}
	sent, lost := stream.Finish()
	d.check(lost == 0, fmt.Sprintf("requests during the drain: %d sent, %d lost", sent, lost))
	_, err = k.CS.CoreV1().Nodes().Patch(ctx, n1.Name, types.MergePatchType, []byte(`{"metadata":{"annotations":{"petrel.dev/drain":null}}}`), metav1.PatchOptions{})
	if err == nil {
		_, err = wait.For(10*time.Second, "undrained", func() bool { return strings.Count(l.FRR.NextHops(host), " ") == 2 })
	}
	d.check(err == nil, "annotation removed: node1 announces at full preference again")
}

// label adds role=web to a pod.
func (d *demo) label(ctx context.Context, name string) error {
	_, err := d.kube.CS.CoreV1().Pods("default").Patch(ctx, name, types.MergePatchType, []byte(`{"metadata":{"labels":{"role":"web"}}}`), metav1.PatchOptions{})
	return err
}

// stopServices stops the kube-proxies and the pods' servers.
func (d *demo) stopServices() {
	for _, p := range d.proxies {
		p.Signal(syscall.SIGTERM)
	}
	for _, stop := range d.stops {
		stop()
	}
}
