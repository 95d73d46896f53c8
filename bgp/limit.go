package bgp

import (
	"net/netip"
	"time"
)

// A peer that sends more prefixes than its limit is shut down (count.go:
// NOTIFICATION Cease, administrative shutdown, "maximum number of prefixes
// reached") and left administratively down. Recreating it at once, as a dropped session is,
// would have it send its whole table again and again; instead it waits,
// doubling from the first wait up to prefixLimitMaxWait, and every
// shutdown is logged and reported as the session state "prefix-limit".

// prefixLimitMaxWait caps the wait between retries of a peer over its limit.
const prefixLimitMaxWait = 30 * time.Minute

// prefixLimitReset: a peer that stayed under its limit this long starts
// again from the first wait.
const prefixLimitReset = time.Hour

type limited struct {
	at, retryAt time.Time
	wait        time.Duration
}

// overLimit records a prefix-limit shutdown of addr, which sent n. Called
// with s.mu held.
func (s *Speaker) overLimit(addr netip.Addr, now time.Time, n int) {
	l, seen := s.limited[addr]
	switch {
	case !seen || now.Sub(l.at) > prefixLimitReset+l.wait:
		l.wait = s.cfg.PrefixLimitWait
		if l.wait == 0 {
			l.wait = time.Minute
		}
	default:
		l.wait = min(2*l.wait, prefixLimitMaxWait)
	}
	l.at, l.retryAt = now, now.Add(l.wait)
	s.limited[addr] = l
	limit := s.peers[addr].MaxPrefixes
	if limit == 0 {
		limit = DefaultMaxPrefixes(s.cfg, addr.Is4())
	}
	s.log.Warn("peer exceeded its prefix limit: session shut down", "peer", addr, "prefixes", n, "maxPrefixes", limit, "retryIn", l.wait)
}

// due: a peer down for its limit whose wait is over, to be recreated.
func (l limited) due(now time.Time) bool { return !l.retryAt.IsZero() && !now.Before(l.retryAt) }

// waiting reports whether addr is down for its prefix limit and must stay
// so for now. Called with s.mu held.
func (s *Speaker) waiting(addr netip.Addr, now time.Time) bool {
	l, ok := s.limited[addr]
	return ok && now.Before(l.retryAt) && !l.retryAt.IsZero()
}

// DefaultMaxPrefixes is the prefix limit of a peer that sets none, per
// address family: twice what the cluster can hold (a pod CIDR of this
// node's size for every slot of the cluster CIDRs), plus 1,024 for each
// extra prefix accepted and 1,024 to spare; at most 65,536. A peer that
// sends more is a misconfigured or hostile one, and the limit keeps the
// agent's memory bounded.
func DefaultMaxPrefixes(cfg Config, v4 bool) uint32 {
	podBits := 24
	if !v4 {
		podBits = 64
	}
	for _, p := range cfg.PodCIDRs {
		if p.Addr().Is4() == v4 {
			podBits = p.Bits()
		}
	}
	var n uint64 = 1024
	for _, c := range cfg.ClusterCIDRs {
		if c.Addr().Is4() == v4 && podBits >= c.Bits() {
			n += 2 << min(podBits-c.Bits(), 20)
		}
	}
	for _, e := range cfg.ImportExtras {
		if e.Addr().Is4() == v4 {
			n += 1024
		}
	}
	return uint32(min(n, 65536))
}
