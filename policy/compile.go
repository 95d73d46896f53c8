package policy

import (
	"cmp"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
)

// Input is everything the compiler needs to know.
type Input struct {
	Namespaces []Namespace
	Pods       []Pod
	Policies   []Policy
	// Pending are pods on this node whose labels are not known yet (the
	// IPAM store knows their namespace from the CNI call). In a namespace
	// with any policy they are isolated both ways with nothing allowed
	// until classified: a pod never passes traffic a policy would deny.
	Pending []Pod
	// Masquerade traffic from PodCIDRs to anything outside NoMasquerade
	// (cluster, service and configured CIDRs).
	Masquerade   bool
	PodCIDRs     []netip.Prefix
	NoMasquerade []netip.Prefix
}

// labelKey indexes a namespace's pods by one label.
type labelKey struct{ namespace, key, value string }

type compiler struct {
	in     Input
	out    *Desired
	nsLbls map[string]map[string]string
	// byNS and byLabel index pods, so a selector looks at the pods that
	// can match instead of the whole cluster: with thousands of pods and
	// policies, scanning made every compile take seconds.
	byNS    map[string][]int
	byLabel map[labelKey][]int
	nsNames []string
	indexed bool // built on first use: most incremental compiles need none
}

// Compile computes Petrel's table from the cluster state. It is pure: the
// same input gives the same output, element order included.
func Compile(in Input) *Desired { return compile(in, nil) }

func compile(in Input, cache *Compiler) *Desired {
	c := &compiler{in: in, out: &Desired{Sets: map[string]*Set{}, Masquerade: in.Masquerade}, nsLbls: map[string]map[string]string{}}
	for _, ns := range in.Namespaces {
		c.nsLbls[ns.Name] = ns.Labels
	}
	for _, f := range []Family{V4, V6} {
		c.out.set("in-iso-"+f.String(), f, AddrSet)
		c.out.set("eg-iso-"+f.String(), f, AddrSet)
		c.out.Egress = append(c.out.Egress, Stmt{Family: f, Matches: []Match{{Field: Saddr, Set: "eg-iso-" + f.String(), Invert: true}}, Verdict: Return})
		c.out.Ingress = append(c.out.Ingress, Stmt{Family: f, Matches: []Match{{Field: Daddr, Set: "in-iso-" + f.String(), Invert: true}}, Verdict: Return})
		pods := c.out.set("pods-"+f.String(), f, AddrSet)
		nomasq := c.out.set("nomasq-"+f.String(), f, AddrSet)
		for _, p := range in.PodCIDRs {
			addRange(pods, p, f)
		}
		for _, p := range in.NoMasquerade {
			addRange(nomasq, p, f)
		}
	}
	c.pending()
	pols := slices.Clone(in.Policies)
	slices.SortFunc(pols, func(a, b Policy) int {
		return cmp.Or(strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	outs := make([]*Desired, 0, len(pols))
	for _, p := range pols {
		var po *Desired
		var entry cacheEntry
		if cache != nil {
			po, entry = cache.lookup(c, p)
		}
		if po == nil {
			po = c.policy(p)
			if cache != nil {
				cache.store(p, entry, po)
			}
		}
		outs = append(outs, po)
	}
	isoDone := false
	if cache != nil {
		cache.isolation(c, pols, outs) // kept up to date change by change
		isoDone = true
	} else {
		c.reserveIso(outs)
	}
	for _, po := range outs {
		c.merge(po, isoDone)
	}
	c.out.Egress = append(c.out.Egress, Stmt{Family: Any, Verdict: Drop})
	c.out.Ingress = append(c.out.Ingress, Stmt{Family: Any, Verdict: Drop})
	for _, name := range globalSets {
		set := c.out.Sets[name]
		if isIso(name) {
			if isoDone {
				continue
			}
			// A pod selected by many policies arrives many times: drop the
			// repeats before sorting, which is most of the work otherwise.
			set.Elems = uniqueElems(set.Elems)
		}
		set.normalize()
	}
	c.out.shareEqualSets()
	c.out.prune()
	return c.out
}

// globalSets are Petrel's own sets, used by the base and masquerade rules.
var globalSets = []string{"in-iso-4", "in-iso-6", "eg-iso-4", "eg-iso-6", "pods-4", "pods-6", "nomasq-4", "nomasq-6"}

// prune drops the sets no statement looks up (a policy's target set when
// it has no egress rules, a family none of its pods has): every set is
// work for the kernel in the full transaction.
func (d *Desired) prune() {
	used := make(map[string]bool, len(d.Sets))
	for _, n := range globalSets {
		used[n] = true
	}
	for _, chain := range [][]Stmt{d.Egress, d.Ingress} {
		for _, st := range chain {
			for _, m := range st.Matches {
				used[m.Set] = true
			}
		}
	}
	for name := range d.Sets {
		if !used[name] {
			delete(d.Sets, name)
		}
	}
}

// reserveIso sizes the global isolation sets for every policy's isolated
// pods at once: growing them policy by policy copied them over and over.
func (c *compiler) reserveIso(outs []*Desired) {
	n := map[string]int{}
	for _, po := range outs {
		for name, set := range po.Sets {
			if isIso(name) {
				n[name] += len(set.Elems)
			}
		}
	}
	for name, extra := range n {
		if g, ok := c.out.Sets[name]; ok {
			g.Elems = slices.Grow(g.Elems, extra)
		}
	}
}

// merge adds one policy's output: its own sets are shared as they are
// (already normalized), its isolated pods join the global isolation sets
// (unless isoDone: the cache has built them).
func (c *compiler) merge(po *Desired, isoDone bool) {
	for name, set := range po.Sets {
		if g, ok := c.out.Sets[name]; ok && isIso(name) {
			if !isoDone {
				g.Elems = append(g.Elems, set.Elems...)
			}
			continue
		}
		c.out.Sets[name] = set
	}
	c.out.Egress = append(c.out.Egress, po.Egress...)
	c.out.Ingress = append(c.out.Ingress, po.Ingress...)
}

func isIso(name string) bool {
	return strings.HasPrefix(name, "in-iso-") || strings.HasPrefix(name, "eg-iso-")
}

func addRange(s *Set, p netip.Prefix, f Family) {
	if familyOf(p.Addr()) == f {
		lo, hi := prefixRange(p)
		s.Elems = append(s.Elems, Elem{AddrLo: lo, AddrHi: hi})
	}
}

func (c *compiler) pending() {
	withPolicy := map[string]bool{}
	for _, p := range c.in.Policies {
		withPolicy[p.Namespace] = true
	}
	for _, pod := range c.in.Pending {
		if !withPolicy[pod.Namespace] {
			continue
		}
		for _, a := range pod.IPs {
			for _, dir := range []string{"in-iso-", "eg-iso-"} {
				s := c.out.Sets[dir+familyOf(a).String()]
				s.Elems = append(s.Elems, Elem{AddrLo: a, AddrHi: a})
			}
		}
	}
}

// setID is a short, stable name for a policy's sets.
func setID(p Policy) string {
	h := fnv.New32a()
	h.Write([]byte(p.Namespace + "/" + p.Name))
	return fmt.Sprintf("p%08x", h.Sum32())
}

func (c *compiler) index() {
	if c.indexed {
		return
	}
	c.indexed = true
	c.byNS, c.byLabel = map[string][]int{}, map[labelKey][]int{}
	for i, pod := range c.in.Pods {
		if _, ok := c.byNS[pod.Namespace]; !ok {
			c.nsNames = append(c.nsNames, pod.Namespace)
		}
		c.byNS[pod.Namespace] = append(c.byNS[pod.Namespace], i)
		for k, v := range pod.Labels {
			key := labelKey{pod.Namespace, k, v}
			c.byLabel[key] = append(c.byLabel[key], i)
		}
	}
	slices.Sort(c.nsNames)
}

// selected returns the pods a selector picks: pods (selector) in namespaces
// (nsSel), or in namespace ns when nsSel is nil. It points into the input
// instead of copying: a policy selects hundreds of pods.
func (c *compiler) selected(podSel, nsSel *Selector, ns string) []*Pod {
	c.index()
	namespaces := []string{ns}
	if nsSel != nil {
		namespaces = nil
		for _, n := range c.nsNames {
			if nsSel.Matches(c.nsLbls[n]) {
				namespaces = append(namespaces, n)
			}
		}
	}
	var out []*Pod
	for _, n := range namespaces {
		for _, i := range c.candidates(podSel, n) {
			if pod := &c.in.Pods[i]; podSel == nil || podSel.Matches(pod.Labels) {
				out = append(out, pod)
			}
		}
	}
	return out
}

// candidates narrows a namespace's pods by the selector's most selective
// matchLabels term; the full selector is checked afterwards.
func (c *compiler) candidates(sel *Selector, ns string) []int {
	best := c.byNS[ns]
	if sel == nil {
		return best
	}
	for k, v := range sel.MatchLabels {
		if l := c.byLabel[labelKey{ns, k, v}]; len(l) < len(best) {
			best = l
		}
	}
	return best
}

// policy compiles one policy into its own sets and statements; its
// isolated pods go into sets named like the global isolation sets.
func (c *compiler) policy(p Policy) *Desired {
	global := c.out
	c.out = &Desired{Sets: map[string]*Set{}}
	defer func() { c.out = global }()
	for _, f := range []Family{V4, V6} {
		c.out.set("in-iso-"+f.String(), f, AddrSet)
		c.out.set("eg-iso-"+f.String(), f, AddrSet)
	}
	owner := p.Namespace + "/" + p.Name
	id := setID(p)
	targets := c.selected(&p.PodSelector, nil, p.Namespace)
	tgt := map[Family]*Set{}
	for _, f := range []Family{V4, V6} {
		tgt[f] = c.out.set(id+"-tgt-"+f.String(), f, AddrSet)
	}
	for _, pod := range targets {
		for _, a := range pod.IPs {
			tgt[familyOf(a)].Elems = append(tgt[familyOf(a)].Elems, Elem{AddrLo: a, AddrHi: a})
		}
	}
	if p.Ingress {
		for i, r := range p.IngressRules {
			c.ingressRule(owner, fmt.Sprintf("%s-in%d", id, i), p.Namespace, targets, r)
		}
	}
	if p.Egress {
		for i, r := range p.EgressRules {
			c.egressRule(owner, fmt.Sprintf("%s-eg%d", id, i), id+"-tgt-", p.Namespace, r)
		}
	}
	out := c.out
	out.normalize()
	// The isolated pods are the targets: the sets share their elements
	// (no one writes into a compiled set's elements). The target set
	// itself is only looked up by egress rules.
	for _, f := range []Family{V4, V6} {
		if p.Ingress {
			out.Sets["in-iso-"+f.String()].Elems = tgt[f].Elems
		}
		if p.Egress {
			out.Sets["eg-iso-"+f.String()].Elems = tgt[f].Elems
		} else {
			delete(out.Sets, tgt[f].Name)
		}
	}
	return out
}

// peerRanges are the addresses a rule's peers stand for.
func (c *compiler) peerRanges(ns string, r Rule) []Elem {
	var out []Elem
	for _, peer := range r.Peers {
		if peer.IPBlock != nil {
			out = append(out, blockRanges(*peer.IPBlock)...)
			continue
		}
		for _, pod := range c.selected(peer.PodSelector, peer.NamespaceSelector, ns) {
			for _, a := range pod.IPs {
				out = append(out, Elem{AddrLo: a, AddrHi: a})
			}
		}
	}
	return out
}

func (c *compiler) ingressRule(owner, name, ns string, targets []*Pod, r Rule) {
	for _, f := range []Family{V4, V6} {
		dst := c.out.set(name+"-dst-"+f.String(), f, DstSet)
		for _, pod := range targets {
			for _, a := range pod.IPs {
				if familyOf(a) == f {
					dst.Elems = append(dst.Elems, dstElems(Elem{AddrLo: a, AddrHi: a}, r.Ports, pod.Ports)...)
				}
			}
		}
		st := Stmt{Owner: owner, Family: f, Matches: []Match{{Field: DaddrProtoPort, Set: dst.Name}}, Verdict: Return}
		if len(r.Peers) > 0 {
			src := c.out.set(name+"-src-"+f.String(), f, AddrSet)
			for _, e := range c.peerRanges(ns, r) {
				if familyOf(e.AddrLo) == f {
					src.Elems = append(src.Elems, e)
				}
			}
			if len(src.Elems) == 0 {
				continue // the peers select nothing: the rule allows nothing
			}
			st.Matches = append(st.Matches, Match{Field: Saddr, Set: src.Name})
		}
		if len(dst.Elems) > 0 {
			c.out.Ingress = append(c.out.Ingress, st)
		}
	}
}

func (c *compiler) egressRule(owner, name, tgtPrefix, ns string, r Rule) {
	for _, f := range []Family{V4, V6} {
		dst := c.out.set(name+"-dst-"+f.String(), f, DstSet)
		numeric, anyNumeric := portsFor(r.Ports, false)
		if len(r.Peers) == 0 {
			lo, hi := prefixRange(netip.PrefixFrom(map[Family]netip.Addr{V4: netip.IPv4Unspecified(), V6: netip.IPv6Unspecified()}[f], 0))
			if anyNumeric {
				dst.Elems = append(dst.Elems, dstElems(Elem{AddrLo: lo, AddrHi: hi}, numeric, nil)...)
			}
			// A named port with no peers means that port on any pod.
			if named, ok := portsFor(r.Ports, true); ok {
				for _, pod := range c.in.Pods {
					for _, a := range pod.IPs {
						if familyOf(a) == f {
							dst.Elems = append(dst.Elems, dstElems(Elem{AddrLo: a, AddrHi: a}, named, pod.Ports)...)
						}
					}
				}
			}
		}
		for _, peer := range r.Peers {
			if peer.IPBlock != nil {
				if !anyNumeric {
					continue
				}
				for _, e := range blockRanges(*peer.IPBlock) {
					if familyOf(e.AddrLo) == f {
						dst.Elems = append(dst.Elems, dstElems(e, numeric, nil)...)
					}
				}
				continue
			}
			for _, pod := range c.selected(peer.PodSelector, peer.NamespaceSelector, ns) {
				for _, a := range pod.IPs {
					if familyOf(a) == f {
						dst.Elems = append(dst.Elems, dstElems(Elem{AddrLo: a, AddrHi: a}, r.Ports, pod.Ports)...)
					}
				}
			}
		}
		if len(dst.Elems) > 0 {
			c.out.Egress = append(c.out.Egress, Stmt{Owner: owner, Family: f, Verdict: Return,
				Matches: []Match{{Field: Saddr, Set: tgtPrefix + f.String()}, {Field: DaddrProtoPort, Set: dst.Name}}})
		}
	}
}

// portsFor splits a rule's ports by what a destination can resolve: an IP
// block only numeric ports, since a name means a container's port. ok is
// false when the rule has ports but none of the wanted kind: then nothing
// matches. No ports at all means every port.
func portsFor(ps []Port, named bool) (out []Port, ok bool) {
	if len(ps) == 0 {
		return nil, !named // "all ports" is already covered by the numeric pass
	}
	for _, p := range ps {
		if (p.Name != "") == named {
			out = append(out, p)
		}
	}
	return out, len(out) > 0
}

// dstElems crosses an address range with the rule's ports, named ports
// resolved against podPorts (the destination pod's containers).
func dstElems(addr Elem, ports []Port, podPorts []NamedPort) []Elem {
	if len(ports) == 0 {
		addr.ProtoLo, addr.ProtoHi, addr.PortLo, addr.PortHi = 0, 255, 0, 65535
		return []Elem{addr}
	}
	var out []Elem
	for _, p := range ports {
		e := addr
		e.ProtoLo, e.ProtoHi = uint8(p.Protocol), uint8(p.Protocol)
		switch {
		case p.Name != "":
			for _, np := range podPorts {
				if np.Name == p.Name && np.Protocol == p.Protocol {
					e.PortLo, e.PortHi = np.Port, np.Port
					out = append(out, e)
				}
			}
			continue
		case p.Number == 0:
			e.PortLo, e.PortHi = 0, 65535
		default:
			e.PortLo, e.PortHi = p.Number, max(p.EndPort, p.Number)
		}
		out = append(out, e)
	}
	return out
}

func uniqueElems(es []Elem) []Elem {
	seen := make(map[Elem]struct{}, len(es)/4)
	out := es[:0:0]
	for _, e := range es {
		if _, dup := seen[e]; !dup {
			seen[e] = struct{}{}
			out = append(out, e)
		}
	}
	return out
}
