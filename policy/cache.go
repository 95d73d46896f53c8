package policy

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
)

// Compiler compiles again and again, reusing each policy's output while
// nothing it reads has changed: the policy itself, and the pods and labels
// of the namespaces it selects from. A pod added or relabelled then costs
// the policies that can see its namespace, not the whole cluster. Its
// output is the same as Compile's, which the tests check.
type Compiler struct {
	entries map[string]cacheEntry
	nsVer   map[string]uint64
	reused  int // policies the last Compile took from the cache
}

type cacheEntry struct {
	key, deps string
	out       *Desired
}

// NewCompiler returns a Compiler with an empty cache.
func NewCompiler() *Compiler { return &Compiler{entries: map[string]cacheEntry{}} }

// Compile is Compile, with the cache.
func (k *Compiler) Compile(in Input) *Desired {
	k.nsVer, k.reused = namespaceVersions(in), 0
	d := compile(in, k)
	live := map[string]bool{}
	for _, p := range in.Policies {
		live[p.Namespace+"/"+p.Name] = true
	}
	for name := range k.entries {
		if !live[name] {
			delete(k.entries, name)
		}
	}
	return d
}

// lookup returns the cached output, or nil and the entry to store once
// the policy is compiled (its key and dependencies computed only once).
func (k *Compiler) lookup(c *compiler, p Policy) (*Desired, cacheEntry) {
	want := cacheEntry{key: policyKey(p), deps: k.deps(c, p)}
	if e, ok := k.entries[p.Namespace+"/"+p.Name]; ok && e.key == want.key && e.deps == want.deps {
		k.reused++
		return e.out, e
	}
	return nil, want
}

func (k *Compiler) store(p Policy, e cacheEntry, out *Desired) {
	e.out = out
	k.entries[p.Namespace+"/"+p.Name] = e
}

// Reused is how many policies the last Compile took from the cache.
func (k *Compiler) Reused() int { return k.reused }

// policyKey identifies a policy by its values. Policies translated afresh
// from API objects at every sync carry new pointers (selectors, ipBlocks):
// the key must not see them. JSON writes map keys sorted, so equal values
// give equal keys.
func policyKey(p Policy) string {
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Sprintf("unkeyable %p", &p) // never reused
	}
	return string(b)
}

// deps names the namespaces a policy reads, with their versions.
func (k *Compiler) deps(c *compiler, p Policy) string {
	read := map[string]bool{p.Namespace: true}
	all := false
	for _, rules := range [][]Rule{p.IngressRules, p.EgressRules} {
		for _, r := range rules {
			for _, peer := range r.Peers {
				if peer.NamespaceSelector != nil {
					for _, n := range c.nsNames {
						if peer.NamespaceSelector.Matches(c.nsLbls[n]) {
							read[n] = true
						}
					}
				}
			}
		}
	}
	for _, r := range p.EgressRules {
		all = all || (len(r.Peers) == 0 && slices.ContainsFunc(r.Ports, func(pt Port) bool { return pt.Name != "" }))
	}
	if all {
		for _, n := range c.nsNames {
			read[n] = true
		}
	}
	names := make([]string, 0, len(read))
	for n := range read {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "%s=%x,", n, k.nsVer[n])
	}
	return b.String()
}

// namespaceVersions hashes each namespace's labels and pods; the sum of
// per-pod hashes does not depend on the order pods arrive in.
func namespaceVersions(in Input) map[string]uint64 {
	out := map[string]uint64{}
	for _, ns := range in.Namespaces {
		out[ns.Name] += hashOf("ns", ns.Name, labelString(ns.Labels))
	}
	for _, p := range in.Pods {
		out[p.Namespace] += hashOf("pod", p.Name, labelString(p.Labels), fmt.Sprint(p.IPs), fmt.Sprint(p.Ports))
	}
	return out
}

func labelString(l map[string]string) string {
	keys := make([]string, 0, len(l))
	for k := range l {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "=" + l[k] + ",")
	}
	return b.String()
}

func hashOf(parts ...string) uint64 {
	h := fnv.New64a()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return h.Sum64()
}
