package policy

import (
	"encoding/json"
	"fmt"
	"hash/fnv"
	"slices"
	"strings"
)

// Compiler compiles again and again, reusing each policy's output while
// nothing it reads has changed: the policy itself, and the pods it can
// select. A pod added, deleted or relabelled recompiles only the policies
// that could select it before or after the change (as a target, or through
// a rule's peer); a namespace relabelled, the policies that select
// namespaces. Its output is the same as Compile's, which the tests check.
type Compiler struct {
	entries map[string]cacheEntry
	pods    map[string]podState // by "namespace/name", as of the last Compile
	nsFP    map[string]uint64   // each namespace's labels, hashed
	reused  int                 // policies the last Compile took from the cache
	iso     isoState            // the global isolation sets, kept up to date

	// What changed since the last Compile, for lookup.
	changed   []podState
	nsChanged bool
	nsLabels  map[string]map[string]string
}

type cacheEntry struct {
	key string
	out *Desired
}

// podState is what a policy can see of a pod.
type podState struct {
	namespace string
	labels    map[string]string
	fp        uint64 // labels, addresses and named ports, hashed
}

// NewCompiler returns a Compiler with an empty cache.
func NewCompiler() *Compiler {
	return &Compiler{entries: map[string]cacheEntry{}, pods: map[string]podState{}, nsFP: map[string]uint64{}}
}

// Compile is Compile, with the cache.
func (k *Compiler) Compile(in Input) *Desired {
	k.reused = 0
	k.diff(in)
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

// diff records what changed since the last Compile: the pods whose labels,
// addresses or ports changed (both versions), and whether any namespace's
// labels did.
func (k *Compiler) diff(in Input) {
	k.changed, k.nsChanged = k.changed[:0], false
	k.nsLabels = make(map[string]map[string]string, len(in.Namespaces))
	nsFP := make(map[string]uint64, len(in.Namespaces))
	for _, ns := range in.Namespaces {
		k.nsLabels[ns.Name] = ns.Labels
		nsFP[ns.Name] = hashOf("ns", labelString(ns.Labels))
		if k.nsFP[ns.Name] != nsFP[ns.Name] {
			k.nsChanged = true
		}
	}
	if len(nsFP) != len(k.nsFP) {
		k.nsChanged = true
	}
	k.nsFP = nsFP
	pods := make(map[string]podState, len(in.Pods))
	for _, p := range in.Pods {
		key := p.Namespace + "/" + p.Name
		st := podState{namespace: p.Namespace, labels: p.Labels, fp: podFP(p)}
		pods[key] = st
		if old, ok := k.pods[key]; !ok || old.fp != st.fp {
			k.changed = append(k.changed, st)
			if ok {
				k.changed = append(k.changed, old)
			}
		}
	}
	for key, old := range k.pods {
		if _, ok := pods[key]; !ok {
			k.changed = append(k.changed, old)
		}
	}
	k.pods = pods
}

// podFP hashes what a policy's output depends on of a pod.
func podFP(p Pod) uint64 {
	h := fnv.New64a()
	h.Write([]byte(labelString(p.Labels)))
	for _, a := range p.IPs {
		b, _ := a.MarshalBinary()
		h.Write(b)
	}
	for _, np := range p.Ports {
		h.Write([]byte{0, byte(np.Protocol), byte(np.Port >> 8), byte(np.Port)})
		h.Write([]byte(np.Name))
	}
	return h.Sum64()
}

// lookup returns the cached output, or nil and the entry to store once
// the policy is compiled.
func (k *Compiler) lookup(_ *compiler, p Policy) (*Desired, cacheEntry) {
	want := cacheEntry{key: policyKey(p)}
	if e, ok := k.entries[p.Namespace+"/"+p.Name]; ok && e.key == want.key && !k.affects(p) {
		k.reused++
		return e.out, e
	}
	return nil, want
}

func (k *Compiler) store(p Policy, e cacheEntry, out *Desired) {
	e.out = out
	k.entries[p.Namespace+"/"+p.Name] = e
}

// affects reports whether the changes since the last Compile can change
// p's output: a changed pod it selects (or selected) as a target or a
// rule's peer, or, for a policy that selects namespaces, any namespace
// relabelled.
func (k *Compiler) affects(p Policy) bool {
	if len(k.changed) == 0 && !k.nsChanged {
		return false
	}
	for _, rules := range [][]Rule{p.IngressRules, p.EgressRules} {
		for _, r := range rules {
			for _, peer := range r.Peers {
				if peer.NamespaceSelector != nil && k.nsChanged {
					return true
				}
			}
		}
	}
	for _, r := range p.EgressRules {
		// Named ports toward any destination read every pod's ports.
		if len(r.Peers) == 0 && len(k.changed) > 0 && slices.ContainsFunc(r.Ports, func(pt Port) bool { return pt.Name != "" }) {
			return true
		}
	}
	for _, pod := range k.changed {
		if pod.namespace == p.Namespace && p.PodSelector.Matches(pod.labels) {
			return true
		}
		for _, rules := range [][]Rule{p.IngressRules, p.EgressRules} {
			for _, r := range rules {
				for _, peer := range r.Peers {
					if peer.IPBlock == nil && k.peerSees(p, peer, pod) {
						return true
					}
				}
			}
		}
	}
	return false
}

// peerSees reports whether a rule's peer selects pod.
func (k *Compiler) peerSees(p Policy, peer Peer, pod podState) bool {
	if peer.NamespaceSelector == nil && pod.namespace != p.Namespace {
		return false
	}
	if peer.NamespaceSelector != nil && !peer.NamespaceSelector.Matches(k.nsLabels[pod.namespace]) {
		return false
	}
	return peer.PodSelector == nil || peer.PodSelector.Matches(pod.labels)
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
