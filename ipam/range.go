// Package ipam hands out pod addresses from the node's pod CIDRs and records
// every allocation in a crash-safe on-disk store. It knows nothing of
// Kubernetes or netlink: the CNI plugin calls it, the agent reads it.
package ipam

import (
	"fmt"
	"net/netip"
)

// Range is one pool of pod addresses: a CIDR minus its reserved addresses.
//
// Reserved are the network address, the IPv4 broadcast address and the
// gateway address (the first host address, .1 or ::1), which stays free for
// the node itself. Pods reach their node through a link-local gateway, so the
// range's own gateway is never handed to a pod.
type Range struct {
	Prefix netip.Prefix
}

// ParseRange parses a CIDR such as "10.244.1.0/24" into a Range. It rejects
// host bits and ranges too small to hold a single pod address.
func ParseRange(s string) (Range, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return Range{}, fmt.Errorf("range %q: %w", s, err)
	}
	if p.Masked() != p {
		return Range{}, fmt.Errorf("range %q: host bits set (did you mean %s?)", s, p.Masked())
	}
	if p.Addr().Is4In6() {
		return Range{}, fmt.Errorf("range %q: IPv4-mapped IPv6 is not a pod range", s)
	}
	if p.Addr().BitLen()-p.Bits() < 2 {
		return Range{}, fmt.Errorf("range %q: too small, need at least a /%d", s, p.Addr().BitLen()-2)
	}
	return Range{Prefix: p}, nil
}

func (r Range) String() string { return r.Prefix.String() }

// Is4 reports whether the range holds IPv4 addresses.
func (r Range) Is4() bool { return r.Prefix.Addr().Is4() }

// first is the network address, gateway the first host address.
func (r Range) first() netip.Addr   { return r.Prefix.Addr() }
func (r Range) gateway() netip.Addr { return r.first().Next() }

// last is the highest address in the prefix (the IPv4 broadcast address).
func (r Range) last() netip.Addr {
	a := r.Prefix.Addr().AsSlice()
	hostBits := len(a)*8 - r.Prefix.Bits()
	for i := len(a) - 1; i >= 0 && hostBits > 0; i-- {
		n := min(hostBits, 8)
		a[i] |= byte(1<<n - 1)
		hostBits -= n
	}
	out, _ := netip.AddrFromSlice(a)
	return out
}

// Reserved reports whether a is never handed to a pod.
func (r Range) Reserved(a netip.Addr) bool {
	if a == r.first() || a == r.gateway() {
		return true
	}
	return r.Is4() && a == r.last()
}

// Contains reports whether a is in the range and may be handed to a pod.
func (r Range) Contains(a netip.Addr) bool {
	return r.Prefix.Contains(a) && !r.Reserved(a)
}

// Size is the number of assignable addresses, capped at maxInt for huge IPv6
// ranges (the cap only bounds a search, it is never shown).
func (r Range) Size() int {
	hostBits := r.Prefix.Addr().BitLen() - r.Prefix.Bits()
	if hostBits >= 62 {
		return 1 << 62
	}
	n := 1<<hostBits - 2 // network and gateway
	if r.Is4() {
		n-- // broadcast
	}
	return n
}

// Next returns the first assignable address after last (wrapping around to
// the start of the range) for which used is false. Starting after the last
// allocation spreads allocations round-robin, so a released address is not
// handed out again at once. inUse bounds the search: a range holding inUse
// allocations has a free address within inUse+1 steps of any start.
func (r Range) Next(last netip.Addr, inUse int, used func(netip.Addr) bool) (netip.Addr, bool) {
	if inUse >= r.Size() {
		return netip.Addr{}, false
	}
	a := last
	if !r.Prefix.Contains(a) {
		a = r.gateway() // start at the first assignable address
	}
	for steps := 0; steps <= inUse+3; steps++ {
		a = a.Next()
		if !a.IsValid() || !r.Prefix.Contains(a) {
			a = r.first()
		}
		if r.Reserved(a) || used(a) {
			continue
		}
		return a, true
	}
	return netip.Addr{}, false
}
