package translate

import (
	"testing"

	netv1 "k8s.io/api/networking/v1"
	"sigs.k8s.io/yaml"

	"github.com/petrelnet/petrel/policy"
)

const np = `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api, namespace: web}
spec:
  podSelector: {matchLabels: {app: api}}
  ingress:
  - from:
    - namespaceSelector: {matchLabels: {team: a}}
      podSelector: {matchExpressions: [{key: tier, operator: In, values: [front]}]}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports: [{port: http}, {protocol: UDP, port: 53, endPort: 60}]
`

// translated decodes and translates the object afresh, as Kubernetes mode
// does at every sync: new pointers for every selector and ipBlock.
func translated(t *testing.T) policy.Policy {
	t.Helper()
	var obj netv1.NetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(np), &obj); err != nil {
		t.Fatal(err)
	}
	p, err := NetworkPolicy(&obj)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Two separate translations of one object are one policy to the compile
// cache: the second compile reuses the first's output.
func TestCompileCacheHitsAcrossTranslations(t *testing.T) {
	pods := []policy.Pod{{Namespace: "web", Name: "api-1", Labels: map[string]string{"app": "api"}}}
	nss := []policy.Namespace{{Name: "web"}, {Name: "ops", Labels: map[string]string{"team": "a"}}}
	k := policy.NewCompiler()
	k.Compile(policy.Input{Namespaces: nss, Pods: pods, Policies: []policy.Policy{translated(t)}})
	if k.Reused() != 0 {
		t.Fatalf("first compile reused %d policies from an empty cache", k.Reused())
	}
	k.Compile(policy.Input{Namespaces: nss, Pods: pods, Policies: []policy.Policy{translated(t)}})
	if k.Reused() != 1 {
		t.Fatalf("a freshly translated, identical policy was compiled again (reused %d, want 1)", k.Reused())
	}
	changed := translated(t)
	changed.IngressRules[0].Ports = nil
	k.Compile(policy.Input{Namespaces: nss, Pods: pods, Policies: []policy.Policy{changed}})
	if k.Reused() != 0 {
		t.Fatal("a changed policy was taken from the cache")
	}
}

// The cache translates an object once, a replaced object again, and
// forgets what was not asked for since the last Sweep.
func TestCache(t *testing.T) {
	var obj netv1.NetworkPolicy
	if err := yaml.UnmarshalStrict([]byte(np), &obj); err != nil {
		t.Fatal(err)
	}
	c := NewCache()
	first, err := c.NetworkPolicy(&obj)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := c.NetworkPolicy(&obj)
	if first.IngressRules[0].Peers[0].PodSelector != again.IngressRules[0].Peers[0].PodSelector {
		t.Fatal("the same object was translated twice")
	}
	c.Sweep()
	newer := obj.DeepCopy()
	newer.Spec.Ingress = nil
	if p, _ := c.NetworkPolicy(newer); len(p.IngressRules) != 0 {
		t.Fatalf("a replaced object came from the cache: %+v", p)
	}
	c.Sweep() // obj was not asked for in this round: forgotten
	if len(c.policies) != 1 {
		t.Fatalf("%d policies cached after the sweep, want 1", len(c.policies))
	}
}
