package bgp

import (
	"errors"
	"fmt"
	"net/netip"
)

// Service addresses: a node announces a LoadBalancer or external IP as a
// host route (or the service CIDR as one aggregate) next to its pod CIDRs.
// Only addresses inside the Service scope the caller gives (the address
// pools, the Services' external IPs, the service CIDRs) are ever
// originated, accepted from a peer or reflected.

// GracefulShutdown is the GRACEFUL_SHUTDOWN community, 65535:0 (RFC 8326).
const GracefulShutdown uint32 = 0xFFFF0000

// drainPrepend is how many more times a draining node prepends its AS to
// eBGP peers: enough to lose to any path through an ordinary node.
const drainPrepend = 3

// inScope reports whether p is a host route inside one of scope, or one
// of scope exactly.
func inScope(p netip.Prefix, scope []netip.Prefix) bool {
	for _, s := range scope {
		if s.Addr().Is4() != p.Addr().Is4() || !s.Contains(p.Addr()) {
			continue
		}
		if p.Bits() == p.Addr().BitLen() || p.Masked() == s.Masked() {
			return true
		}
	}
	return false
}

// servicesIn adds the Service prefixes within the scope to want, and names
// the others, which are not announced.
func servicesIn(a Adverts, want map[netip.Prefix]bool) error {
	var errs []error
	for _, p := range a.Services {
		if !inScope(p.Masked(), a.ServiceScope) {
			errs = append(errs, fmt.Errorf("service address %s: outside every pool, external IP and service CIDR; not announced", p))
			continue
		}
		want[p.Masked()] = true
	}
	return errors.Join(errs...)
}

// scopeEntries renders the scope as prefix-set entries of one family: host
// routes inside each prefix, and the prefix itself.
func scopeEntries(scope []netip.Prefix, is4 bool) []prefixRange {
	var out []prefixRange
	for _, s := range scope {
		if s.Addr().Is4() != is4 {
			continue
		}
		out = append(out, prefixRange{s.Masked(), s.Bits(), s.Bits()})
		if s.Bits() < s.Addr().BitLen() {
			out = append(out, prefixRange{s.Masked(), s.Addr().BitLen(), s.Addr().BitLen()})
		}
	}
	return out
}

// prefixRange is one entry of a prefix set: a prefix and the mask lengths
// it matches.
type prefixRange struct {
	prefix   netip.Prefix
	min, max int
}
