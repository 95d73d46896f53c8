package kube

import (
	"cmp"
	"fmt"
	"math"
	"math/big"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// LoadBalancer addresses: Services of type LoadBalancer get addresses from
// LoadBalancerIPPools, assigned by one agent at a time (lbcontroller.go)
// and announced by the nodes (services.go). This file is the pure part:
// which Service gets which address.

var lbPoolsGVR = schema.GroupVersionResource{Group: CRDGroup, Version: CRDVersion, Resource: "loadbalancerippools"}

// Annotations and the class of the Services Petrel serves.
const (
	// LoadBalancerClass is spec.loadBalancerClass of Services Petrel
	// serves; Services without a class are served too.
	LoadBalancerClass = "petrel.dev/bgp"
	// LBIPsAnnotation asks for specific addresses, comma-separated, one
	// per family (like spec.loadBalancerIP, which is honoured too).
	LBIPsAnnotation = "petrel.dev/load-balancer-ips"
	// SharingAnnotation lets Services with the same value share an
	// address when their ports do not overlap.
	SharingAnnotation = "petrel.dev/allow-shared-ip"
)

// LoadBalancerIPPoolSpec is a range of addresses for LoadBalancer Services.
type LoadBalancerIPPoolSpec struct {
	CIDRs           []string              `json:"cidrs"`
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`
}

// lbPool is a decoded pool.
type lbPool struct {
	name     string
	cidrs    []netip.Prefix
	selector labels.Selector
}

func decodePool(u *unstructured.Unstructured) (lbPool, error) {
	var spec LoadBalancerIPPoolSpec
	if err := decodeSpec(u, &spec); err != nil {
		return lbPool{}, err
	}
	p := lbPool{name: u.GetName(), selector: labels.Everything()}
	if len(spec.CIDRs) == 0 {
		return p, fmt.Errorf("spec.cidrs: at least one is required")
	}
	for i, c := range spec.CIDRs {
		pr, err := netip.ParsePrefix(c)
		if err != nil || pr != pr.Masked() {
			return p, fmt.Errorf("spec.cidrs[%d]: %q is not a CIDR (address bits past the mask set?)", i, c)
		}
		p.cidrs = append(p.cidrs, pr)
	}
	if s := spec.ServiceSelector; s != nil {
		sel, err := metav1.LabelSelectorAsSelector(s)
		if err != nil {
			return p, fmt.Errorf("spec.serviceSelector: %w", err)
		}
		p.selector = sel
	}
	return p, nil
}

// overlaps names the pools whose ranges overlap: an address must belong
// to one pool only.
func overlaps(pools []lbPool) map[string]error {
	out := map[string]error{}
	for i, p := range pools {
		for _, q := range pools[:i] {
			for _, a := range p.cidrs {
				for _, b := range q.cidrs {
					if a.Overlaps(b) {
						out[p.name] = fmt.Errorf("spec.cidrs: %s overlaps %s of pool %s", a, b, q.name)
					}
				}
			}
		}
	}
	return out
}

// served reports whether Petrel assigns this Service's addresses.
func served(s *corev1.Service) bool {
	return s.Spec.Type == corev1.ServiceTypeLoadBalancer &&
		(s.Spec.LoadBalancerClass == nil || *s.Spec.LoadBalancerClass == LoadBalancerClass)
}

// usable reports whether a is an address a pool hands out: not the
// network or broadcast address of an IPv4 range of four or more.
func usable(c netip.Prefix, a netip.Addr) bool {
	if !c.Contains(a) {
		return false
	}
	if a.Is4() && c.Bits() <= 30 {
		return a != c.Addr() && a != lastAddr(c)
	}
	return true
}

func lastAddr(c netip.Prefix) netip.Addr {
	b := c.Addr().AsSlice()
	for i := range b {
		bits := c.Bits() - 8*i
		switch {
		case bits <= 0:
			b[i] = 0xff
		case bits < 8:
			b[i] |= 0xff >> bits
		}
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// size is how many addresses a pool hands out, at most MaxInt64.
func (p lbPool) size() int64 {
	total := new(big.Int)
	for _, c := range p.cidrs {
		n := new(big.Int).Lsh(big.NewInt(1), uint(c.Addr().BitLen()-c.Bits()))
		if c.Addr().Is4() && c.Bits() <= 30 {
			n.Sub(n, big.NewInt(2))
		}
		total.Add(total, n)
	}
	if !total.IsInt64() {
		return math.MaxInt64
	}
	return total.Int64()
}

// lbAssignment is the outcome of one assignment round.
type lbAssignment struct {
	addrs    map[string][]netip.Addr // by Service key: its addresses, in ipFamilies order
	problems map[string]string       // by Service key: why it lacks an address
	used     map[string]int64        // by pool name
}

// holder is a Service holding an address.
type holder struct {
	key     string
	sharing string
	ports   []corev1.ServicePort
	policy  corev1.ServiceExternalTrafficPolicy
	sel     string
}

func holderOf(key string, s *corev1.Service) holder {
	return holder{key: key, sharing: s.Annotations[SharingAnnotation], ports: s.Spec.Ports,
		policy: s.Spec.ExternalTrafficPolicy, sel: labels.SelectorFromSet(s.Spec.Selector).String()}
}

// canShare: both ask to share under the same key, no port is used by
// both, and, with policy Local, both select the same pods (the address is
// announced where their endpoints are).
func (h holder) canShare(o holder) bool {
	if h.sharing == "" || h.sharing != o.sharing || h.policy != o.policy {
		return false
	}
	if h.policy == corev1.ServiceExternalTrafficPolicyLocal && h.sel != o.sel {
		return false
	}
	for _, a := range h.ports {
		for _, b := range o.ports {
			if a.Port == b.Port && cmp.Or(a.Protocol, corev1.ProtocolTCP) == cmp.Or(b.Protocol, corev1.ProtocolTCP) {
				return false
			}
		}
	}
	return true
}

// assignLB gives every served Service an address of each of its families
// from a pool that selects it. Addresses a Service already holds (its
// status) stay while still valid, so a restart or a new leader changes
// nothing; requested ones are honoured when inside a selecting pool and
// free; the rest come from the first pool (by name) with a free address.
func assignLB(pools []lbPool, svcs map[string]*corev1.Service) lbAssignment {
	out := lbAssignment{addrs: map[string][]netip.Addr{}, problems: map[string]string{}, used: map[string]int64{}}
	pools = slices.SortedFunc(slices.Values(pools), func(a, b lbPool) int { return strings.Compare(a.name, b.name) })
	holders := map[netip.Addr][]holder{}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k, s := range svcs {
			if served(s) && !yield(k) {
				return
			}
		}
	})
	// Oldest first, so that a contested address stays with its holder.
	slices.SortStableFunc(keys, func(a, b string) int {
		return svcs[a].CreationTimestamp.Time.Compare(svcs[b].CreationTimestamp.Time)
	})
	poolOf := func(s *corev1.Service, a netip.Addr) (string, bool) {
		for _, p := range pools {
			if !p.selector.Matches(labels.Set(s.Labels)) {
				continue
			}
			for _, c := range p.cidrs {
				if usable(c, a) {
					return p.name, true
				}
			}
		}
		return "", false
	}
	take := func(key string, s *corev1.Service, a netip.Addr) bool {
		h := holderOf(key, s)
		for _, o := range holders[a] {
			if !h.canShare(o) {
				return false
			}
		}
		holders[a] = append(holders[a], h)
		if name, _ := poolOf(s, a); len(holders[a]) == 1 {
			out.used[name]++
		}
		return true
	}
	want := map[string]map[corev1.IPFamily]netip.Addr{}
	// Pass 1: what Services hold already (unless they now ask for another
	// address of that family), then what they request.
	kept := func(s *corev1.Service) []netip.Addr {
		return slices.DeleteFunc(held(s), func(a netip.Addr) bool {
			return slices.ContainsFunc(requested(s), func(r netip.Addr) bool { return family(r) == family(a) && r != a })
		})
	}
	for _, pass := range []func(*corev1.Service) []netip.Addr{kept, requested} {
		for _, key := range keys {
			s := svcs[key]
			if want[key] == nil {
				want[key] = map[corev1.IPFamily]netip.Addr{}
			}
			for _, a := range pass(s) {
				fam := family(a)
				if _, done := want[key][fam]; done || !slices.Contains(families(s), fam) {
					continue
				}
				if _, ok := poolOf(s, a); !ok {
					continue
				}
				if take(key, s, a) {
					want[key][fam] = a
				}
			}
		}
	}
	// Pass 2: the rest from the pools.
	for _, key := range keys {
		s := svcs[key]
		var probs []string
		if err := badRequest(s); err != nil {
			probs = append(probs, err.Error())
		}
		for _, a := range requested(s) {
			if got, ok := want[key][family(a)]; !ok || got != a {
				if _, in := poolOf(s, a); !in {
					probs = append(probs, fmt.Sprintf("requested address %s is not in any LoadBalancerIPPool that selects this Service", a))
				} else {
					probs = append(probs, fmt.Sprintf("requested address %s is in use by %s", a, holders[a][0].key))
				}
			}
		}
		for _, fam := range families(s) {
			if _, ok := want[key][fam]; ok || len(probs) > 0 {
				continue
			}
			if a, ok := freeAddr(pools, s, fam, holders); ok && take(key, s, a) {
				want[key][fam] = a
				continue
			}
			probs = append(probs, fmt.Sprintf("no free %s address in any LoadBalancerIPPool that selects this Service", fam))
		}
		for _, fam := range families(s) {
			if a, ok := want[key][fam]; ok {
				out.addrs[key] = append(out.addrs[key], a)
			}
		}
		if len(probs) > 0 {
			out.problems[key] = strings.Join(probs, "; ")
		}
	}
	return out
}

// freeAddr is the first address of the family in a pool selecting s that
// no Service holds.
func freeAddr(pools []lbPool, s *corev1.Service, fam corev1.IPFamily, holders map[netip.Addr][]holder) (netip.Addr, bool) {
	for _, p := range pools {
		if !p.selector.Matches(labels.Set(s.Labels)) {
			continue
		}
		for _, c := range p.cidrs {
			if family(c.Addr()) != fam {
				continue
			}
			for a := c.Addr(); c.Contains(a); a = a.Next() {
				if usable(c, a) && len(holders[a]) == 0 {
					return a, true
				}
				if !a.Next().IsValid() {
					break
				}
			}
		}
	}
	return netip.Addr{}, false
}

func family(a netip.Addr) corev1.IPFamily {
	if a.Is4() {
		return corev1.IPv4Protocol
	}
	return corev1.IPv6Protocol
}

// families are the Service's IP families (the API server fills them in).
func families(s *corev1.Service) []corev1.IPFamily {
	if len(s.Spec.IPFamilies) == 0 {
		return []corev1.IPFamily{corev1.IPv4Protocol}
	}
	return s.Spec.IPFamilies
}

// held are the addresses in the Service's status.
func held(s *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range s.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(in.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// requested are the addresses the Service asks for, by annotation or
// spec.loadBalancerIP.
func requested(s *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, f := range strings.Split(s.Annotations[LBIPsAnnotation]+","+s.Spec.LoadBalancerIP, ",") {
		if a, err := netip.ParseAddr(strings.TrimSpace(f)); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// badRequest names an unparsable requested address.
func badRequest(s *corev1.Service) error {
	for _, f := range strings.Split(s.Annotations[LBIPsAnnotation], ",") {
		if f = strings.TrimSpace(f); f != "" {
			if _, err := netip.ParseAddr(f); err != nil {
				return fmt.Errorf("annotation %s: %q is not an IP address", LBIPsAnnotation, f)
			}
		}
	}
	return nil
}
