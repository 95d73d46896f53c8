package kube

import (
	"encoding/json"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
)

func pool(name string, cidrs ...string) lbPool {
	p := lbPool{name: name, selector: labels.Everything()}
	for _, c := range cidrs {
		p.cidrs = append(p.cidrs, netip.MustParsePrefix(c))
	}
	return p
}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func lbSvc(name string, age int, fams ...corev1.IPFamily) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(age) * time.Second)),
			Annotations: map[string]string{}, Labels: map[string]string{}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, IPFamilies: fams,
			Ports: []corev1.ServicePort{{Port: 80, Protocol: corev1.ProtocolTCP}}},
	}
}

func render(a lbAssignment) string {
	var out []string
	for _, k := range sortedKeys(a.addrs, a.problems) {
		out = append(out, fmt.Sprintf("%s=%v", k, a.addrs[k]))
		if p := a.problems[k]; p != "" {
			out = append(out, k+"!"+p)
		}
	}
	return strings.Join(out, " ")
}

func sortedKeys(ms ...any) []string {
	seen := map[string]bool{}
	var out []string
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, m := range ms {
		switch m := m.(type) {
		case map[string][]netip.Addr:
			for k := range m {
				add(k)
			}
		case map[string]string:
			for k := range m {
				add(k)
			}
		}
	}
	slices.Sort(out)
	return out
}

func TestAssignLB(t *testing.T) {
	v4, v6 := corev1.IPv4Protocol, corev1.IPv6Protocol
	pools := []lbPool{pool("b", "10.250.0.0/30", "fd00:250::/126"), pool("a", "10.250.1.0/31")}
	svcs := map[string]*corev1.Service{
		"s1": lbSvc("s1", 1, v4),
		"s2": lbSvc("s2", 2, v4, v6),
		"s3": lbSvc("s3", 3, v4),
		"s4": lbSvc("s4", 4, v4),
		"cl": lbSvc("cl", 0, v4),
		"np": {Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort}},
	}
	other := "example.com/other"
	svcs["cl"].Spec.LoadBalancerClass = &other
	// Pool a (first by name) has two addresses (a /31: both usable); pool
	// b's /30 only .1 and .2 (network and broadcast skipped).
	got := render(assignLB(pools, svcs))
	want := "s1=[10.250.1.0] s2=[10.250.1.1 fd00:250::] s3=[10.250.0.1] s4=[10.250.0.2]"
	if got != want {
		t.Fatalf("first round:\n got %s\nwant %s", got, want)
	}
	// A fifth finds nothing; the others keep theirs even when an older
	// Service appears (what a Service holds stays, leader or not).
	for k, s := range svcs {
		a := assignLB(pools, svcs).addrs[k]
		for _, ip := range a {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip.String()})
		}
	}
	svcs["s0"] = lbSvc("s0", -1, v4)
	got = render(assignLB(pools, svcs))
	want = "s0=[] s0!no free IPv4 address in any LoadBalancerIPPool that selects this Service s1=[10.250.1.0] s2=[10.250.1.1 fd00:250::] s3=[10.250.0.1] s4=[10.250.0.2]"
	if got != want {
		t.Fatalf("full:\n got %s\nwant %s", got, want)
	}
	// A pool deleted: its Services move to what is free elsewhere, or
	// lose the address with a problem.
	delete(svcs, "s0")
	got = render(assignLB([]lbPool{pools[0]}, svcs))
	want = "s1=[] s1!no free IPv4 address in any LoadBalancerIPPool that selects this Service s2=[fd00:250::] s2!no free IPv4 address in any LoadBalancerIPPool that selects this Service s3=[10.250.0.1] s4=[10.250.0.2]"
	if got != want {
		t.Fatalf("pool a deleted:\n got %s\nwant %s", got, want)
	}
}

func TestAssignLBRequestsAndSharing(t *testing.T) {
	v4 := corev1.IPv4Protocol
	pools := []lbPool{pool("p", "10.250.0.0/24")}
	web := lbSvc("web", 1, v4)
	web.Annotations[LBIPsAnnotation] = "10.250.0.10"
	dns := lbSvc("dns", 2, v4)
	dns.Annotations[LBIPsAnnotation] = "10.250.0.10"
	dns.Spec.Ports = []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP}}
	outside := lbSvc("outside", 3, v4)
	outside.Spec.LoadBalancerIP = "192.0.2.1"
	bad := lbSvc("bad", 4, v4)
	bad.Annotations[LBIPsAnnotation] = "10.250.0.300"
	svcs := map[string]*corev1.Service{"web": web, "dns": dns, "outside": outside, "bad": bad}
	got := render(assignLB(pools, svcs))
	want := "bad=[] bad!annotation petrel.dev/load-balancer-ips: \"10.250.0.300\" is not an IP address " +
		"dns=[] dns!requested address 10.250.0.10 is in use by web " +
		"outside=[] outside!requested address 192.0.2.1 is not in any LoadBalancerIPPool that selects this Service web=[10.250.0.10]"
	if got != want {
		t.Fatalf("no sharing:\n got %s\nwant %s", got, want)
	}
	// Both allow sharing under one key, ports disjoint: one address.
	web.Annotations[SharingAnnotation], dns.Annotations[SharingAnnotation] = "front", "front"
	if got := assignLB(pools, svcs); fmt.Sprint(got.addrs["dns"], got.addrs["web"], got.used["p"]) != "[10.250.0.10] [10.250.0.10] 1" {
		t.Fatalf("shared: %v", render(got))
	}
	// The same port on both: no sharing.
	dns.Spec.Ports = web.Spec.Ports
	if got := assignLB(pools, svcs); got.problems["dns"] == "" {
		t.Fatalf("shared with a port in common: %v", render(got))
	}
	// A pool that selects other Services is not used for this one.
	sel, _ := labels.Parse("team=a")
	pools[0].selector = sel
	if got := assignLB(pools, map[string]*corev1.Service{"x": lbSvc("x", 1, v4)}); !strings.Contains(got.problems["x"], "no free IPv4") {
		t.Fatalf("selector ignored: %v", render(got))
	}
}

func TestDecodePoolAndOverlaps(t *testing.T) {
	bad := map[string]string{
		`{"cidrs": []}`:                     "spec.cidrs: at least one",
		`{"cidrs": ["10.250.0.1/24"]}`:      "spec.cidrs[0]",
		`{"cidrs": ["10.0.0.0/8"], "x": 1}`: "unknown field",
	}
	for spec, want := range bad {
		if _, err := decodePool(unstructuredSpec(t, "p", spec)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", spec, err, want)
		}
	}
	ov := overlaps([]lbPool{pool("a", "10.250.0.0/24"), pool("b", "10.250.0.128/25"), pool("c", "10.251.0.0/24")})
	if len(ov) != 1 || ov["b"] == nil {
		t.Fatalf("overlaps: %v", ov)
	}
	if got := pool("x", "10.0.0.0/24", "fd00::/64").size(); got != math.MaxInt64 {
		t.Fatalf("size %d", got)
	}
	if got := pool("x", "10.0.0.0/24", "10.1.0.0/31").size(); got != 256 {
		t.Fatalf("size %d, want 254+2", got)
	}
}

func unstructuredSpec(t *testing.T, name, spec string) *unstructured.Unstructured {
	var m map[string]any
	if err := json.Unmarshal([]byte(spec), &m); err != nil {
		t.Fatal(err)
	}
	return object("LoadBalancerIPPool", name, m)
}

// Three agents stand in the election, on the nodes first by name that are
// not known to be down.
func TestElectionCandidates(t *testing.T) {
	ready := func(name string, st corev1.ConditionStatus) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if st != "" {
			n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: st}}
		}
		return n
	}
	gone := ready("a0", corev1.ConditionTrue)
	now := metav1.Now()
	gone.DeletionTimestamp = &now
	nodes := []*corev1.Node{ready("e", corev1.ConditionTrue), ready("b", corev1.ConditionFalse), ready("d", ""),
		ready("a", corev1.ConditionTrue), ready("c", corev1.ConditionUnknown), ready("f", corev1.ConditionTrue), gone}
	if got := fmt.Sprint(candidates(nodes)); got != "[a d e]" {
		t.Fatalf("candidates %s, want [a d e]", got)
	}
	if got := fmt.Sprint(candidates(nodes[:1])); got != "[e]" {
		t.Fatalf("candidates of one node: %s", got)
	}
}
