package policy

import (
	"encoding/binary"
	"hash/maphash"
	"reflect"
	"slices"
)

// Compiler compiles again and again, reusing each policy's output while
// nothing it reads has changed: the policy itself, and the pods it can
// select. A pod added, deleted or relabelled recompiles only the policies
// that could select it before or after the change (as a target, or through
// a rule's peer); a namespace relabelled, the policies that select
// namespaces. Its output is the same as Compile's, which the tests check.
type Compiler struct {
	entries map[string]cacheEntry
	pods    map[podKey]podState // as of the last Compile
	nsFP    map[string]uint64   // each namespace's labels, hashed
	seed    maphash.Seed        // of the fingerprints: random, so labels cannot be chosen to collide
	round   uint64              // of diff, to find the pods gone
	reused  int                 // policies the last Compile took from the cache
	iso     isoState            // the global isolation sets, kept up to date
	shared  interned            // one copy of each distinct set content

	// What changed since the last Compile, for lookup.
	changed   []podState
	nsChanged bool
	nsLabels  map[string]map[string]string
}

type cacheEntry struct {
	policy Policy // as compiled, compared by value
	out    *Desired
}

type podKey struct{ namespace, name string }

// podState is what a policy can see of a pod.
type podState struct {
	namespace string
	labels    map[string]string
	fp        uint64 // labels, addresses and named ports, hashed
	round     uint64 // the last diff that saw the pod
}

// NewCompiler returns a Compiler with an empty cache.
func NewCompiler() *Compiler {
	return &Compiler{entries: map[string]cacheEntry{}, pods: map[podKey]podState{}, nsFP: map[string]uint64{}, seed: maphash.MakeSeed(),
		shared: newInterned()}
}

// Compile is Compile, with the cache. It keeps references to the
// policies it is given, as an informer's cache keeps its objects: a caller
// changes a policy by handing over a new value, never by writing into the
// slices, maps or selectors of one it handed over before.
func (k *Compiler) Compile(in Input) *Desired {
	k.reused = 0
	k.diff(in)
	d := compile(in, k)
	live := make(map[string]bool, len(in.Policies))
	for _, p := range in.Policies {
		live[p.Namespace+"/"+p.Name] = true
	}
	for name, e := range k.entries {
		if !live[name] {
			k.shared.release(e.out)
			delete(k.entries, name)
		}
	}
	return d
}

// diff records what changed since the last Compile: the pods whose labels,
// addresses or ports changed (both versions), and whether any namespace's
// labels did. It runs over every pod at every Compile, so it updates its
// map in place and allocates nothing per unchanged pod.
func (k *Compiler) diff(in Input) {
	k.changed, k.nsChanged = k.changed[:0], false
	k.nsLabels = make(map[string]map[string]string, len(in.Namespaces))
	nsFP := make(map[string]uint64, len(in.Namespaces))
	for _, ns := range in.Namespaces {
		k.nsLabels[ns.Name] = ns.Labels
		nsFP[ns.Name] = k.labelsFP(ns.Labels)
		if old, ok := k.nsFP[ns.Name]; !ok || old != nsFP[ns.Name] {
			k.nsChanged = true
		}
	}
	if len(nsFP) != len(k.nsFP) {
		k.nsChanged = true
	}
	k.nsFP = nsFP
	k.round++
	for _, p := range in.Pods {
		key := podKey{p.Namespace, p.Name}
		st := podState{namespace: p.Namespace, labels: p.Labels, fp: k.podFP(p), round: k.round}
		if old, ok := k.pods[key]; !ok || old.fp != st.fp {
			k.changed = append(k.changed, st)
			if ok {
				k.changed = append(k.changed, old)
			}
		}
		k.pods[key] = st
	}
	for key, old := range k.pods {
		if old.round != k.round {
			k.changed = append(k.changed, old)
			delete(k.pods, key)
		}
	}
}

// podFP hashes what a policy's output depends on of a pod.
func (k *Compiler) podFP(p Pod) uint64 {
	var h maphash.Hash
	h.SetSeed(k.seed)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], k.labelsFP(p.Labels))
	h.Write(b[:])
	for _, a := range p.IPs {
		ip := a.As16()
		h.WriteByte(byte(a.BitLen()))
		h.Write(ip[:])
	}
	for _, np := range p.Ports {
		h.Write([]byte{0, byte(np.Protocol), byte(np.Port >> 8), byte(np.Port)})
		h.WriteString(np.Name)
	}
	return h.Sum64()
}

// labelsFP hashes a label map regardless of its iteration order: the sum
// of each pair's hash (keys are unique, so no pair cancels another).
func (k *Compiler) labelsFP(l map[string]string) uint64 {
	sum := uint64(len(l))
	var h maphash.Hash
	h.SetSeed(k.seed)
	for key, v := range l {
		h.Reset()
		h.WriteString(key)
		h.WriteByte(0)
		h.WriteString(v)
		sum += h.Sum64()
	}
	return sum
}

// lookup returns the cached output, or nil and the entry to store once
// the policy is compiled.
func (k *Compiler) lookup(_ *compiler, p Policy) (*Desired, cacheEntry) {
	want := cacheEntry{policy: p}
	if e, ok := k.entries[p.Namespace+"/"+p.Name]; ok && !k.affects(p) && samePolicy(e.policy, p) {
		k.reused++
		return e.out, e
	}
	return nil, want
}

func (k *Compiler) store(p Policy, e cacheEntry, out *Desired) {
	k.shared.share(out)
	key := p.Namespace + "/" + p.Name
	if old, ok := k.entries[key]; ok {
		k.shared.release(old.out)
	}
	e.out = out
	k.entries[key] = e
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

// samePolicy compares two policies by value. Policies translated afresh
// from API objects carry new pointers (selectors, ipBlocks), which
// DeepEqual follows; an unchanged object's translation, handed out again by
// the translation cache, shares them, and DeepEqual stops at the first
// shared pointer, slice or map.
func samePolicy(a, b Policy) bool { return reflect.DeepEqual(a, b) }
