package policycases

import (
	"fmt"
	"io"
	"net/netip"
	"strings"

	"github.com/petrelnet/petrel/policy"
)

// Synthetic is the benchmarks' cluster: 50 namespaces in 5 tiers, pods
// spread over them and 100 app labels, each policy selecting one app and
// admitting the next app from the namespaces of that app's tier, on a
// named and a numeric port: every policy has rules with real peers. The
// pods get consecutive addresses from first.
func Synthetic(pods, pols int, first netip.Addr) policy.Input {
	var in policy.Input
	for i := range 50 {
		in.Namespaces = append(in.Namespaces, policy.Namespace{Name: fmt.Sprintf("ns%d", i), Labels: map[string]string{"tier": fmt.Sprint(i % 5)}})
	}
	ports := []policy.NamedPort{{Name: "http", Protocol: policy.TCP, Port: 8080}}
	ip := first
	for i := range pods {
		in.Pods = append(in.Pods, policy.Pod{Namespace: fmt.Sprintf("ns%d", i%50), Name: fmt.Sprintf("p%d", i),
			Labels: map[string]string{"app": fmt.Sprintf("app%d", i%100)}, IPs: []netip.Addr{ip}, Ports: ports})
		ip = ip.Next()
	}
	for j := range pols {
		in.Policies = append(in.Policies, policy.Policy{Namespace: fmt.Sprintf("ns%d", j%50), Name: fmt.Sprintf("pol%d", j),
			PodSelector: policy.Selector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", j%100)}}, Ingress: true,
			IngressRules: []policy.Rule{{
				Peers: []policy.Peer{{NamespaceSelector: &policy.Selector{MatchLabels: map[string]string{"tier": fmt.Sprint((j + 1) % 5)}},
					PodSelector: &policy.Selector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", (j+1)%100)}}}},
				Ports: []policy.Port{{Protocol: policy.TCP, Name: "http"}, {Protocol: policy.TCP, Number: 5201}},
			}}})
	}
	return in
}

// WriteSyntheticYAML writes a Synthetic cluster as the standard Kubernetes
// YAML a standalone agent's policyDir reads (Namespaces, Pods with labels,
// named ports and status.podIPs, NetworkPolicies).
func WriteSyntheticYAML(w io.Writer, in policy.Input) error {
	var b strings.Builder
	for _, ns := range in.Namespaces {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: %s, labels: {tier: %q}}\n", ns.Name, ns.Labels["tier"])
	}
	for _, p := range in.Pods {
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Pod\nmetadata: {name: %s, namespace: %s, labels: {app: %s}}\n"+
			"spec: {containers: [{name: c, ports: [{name: http, containerPort: 8080, protocol: TCP}]}]}\n"+
			"status: {podIPs: [{ip: %s}]}\n", p.Name, p.Namespace, p.Labels["app"], p.IPs[0])
	}
	for _, p := range in.Policies {
		peer := p.IngressRules[0].Peers[0]
		fmt.Fprintf(&b, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: %s, namespace: %s}\n"+
			"spec:\n  podSelector: {matchLabels: {app: %s}}\n  policyTypes: [Ingress]\n  ingress:\n"+
			"  - from: [{namespaceSelector: {matchLabels: {tier: %q}}, podSelector: {matchLabels: {app: %s}}}]\n"+
			"    ports: [{protocol: TCP, port: http}, {protocol: TCP, port: 5201}]\n",
			p.Name, p.Namespace, p.PodSelector.MatchLabels["app"], peer.NamespaceSelector.MatchLabels["tier"], peer.PodSelector.MatchLabels["app"])
	}
	_, err := io.WriteString(w, b.String())
	return err
}
