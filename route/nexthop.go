package route

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// A learned route's next hops come from a peer, and a peer can lie: point
// at one of this node's own addresses, at a pod (steering another node's
// traffic into it), or at an address reachable only through Petrel's own
// routes. Resolve keeps only next hops that are not local, not inside the
// forbidden prefixes (the cluster's pod CIDRs), and that the kernel reaches
// through a route Petrel does not own. A next hop on a connected subnet is
// used as it is; one behind a router is installed via that router, as
// BIRD's recursive gateways do, and is resolved again at every sync, so a
// change of the underlay route moves it.

// Rejected is a learned next hop that is not installed, and why.
type Rejected struct {
	NextHop netip.Addr
	Reason  string
}

// errLocal and friends are the reasons a next hop is refused.
var (
	errLocal       = errors.New("a local address of this node")
	errUnreachable = errors.New("no route to it")
	errOwnRoute    = errors.New("reached only through a route Petrel installed")
)

// Resolve validates the next hops of learned routes. A route keeps the
// next hops that pass (each replaced by the gateway the kernel uses to
// reach it); a route left with none is dropped. Every refused next hop is
// returned once, and logged when its verdict changes: a refusal is not an
// error to retry, and never holds up the other routes. The routes returned
// are written over learned's array (at 100,000 routes a full sync would
// otherwise hold another 5.6 MB copy): the caller gives learned up.
func (p *Programmer) Resolve(learned []Route, forbidden []netip.Prefix) ([]Route, []Rejected) {
	out, _, verdicts := p.resolveAll(learned, forbidden, map[netip.Addr]resolution{}, learned[:0])
	p.mu.Lock()
	p.resolved = verdicts
	p.mu.Unlock()
	var rejected []Rejected
	for nh, v := range verdicts {
		if v.err != nil {
			rejected = append(rejected, Rejected{NextHop: nh, Reason: v.err.Error()})
		}
	}
	slices.SortFunc(rejected, func(a, b Rejected) int { return a.NextHop.Compare(b.NextHop) })
	p.reportRejected(rejected, true)
	return out, rejected
}

// ResolveChanged is Resolve for a change set (see Update): it returns the
// routes that keep a next hop and the prefixes of those left with none,
// which must go. It logs a refused next hop whose verdict is new, and
// forgets none: only Resolve, over the whole table, knows that a next hop
// is no longer used.
//
// It reuses the verdicts of the last Resolve: a flood of updates through
// the same few peers asks the kernel nothing. Those are as fresh as the
// last full sync, which every change of another protocol's routes (the
// underlay) triggers; Invalidate drops them.
func (p *Programmer) ResolveChanged(learned []Route, forbidden []netip.Prefix) (routes []Route, none []netip.Prefix) {
	p.mu.Lock()
	if p.resolved == nil {
		p.resolved = map[netip.Addr]resolution{}
	}
	cache := p.resolved
	p.mu.Unlock()
	out, none, verdicts := p.resolveAll(learned, forbidden, cache, make([]Route, 0, len(learned)))
	var rejected []Rejected
	for nh, v := range verdicts {
		if v.err != nil {
			rejected = append(rejected, Rejected{NextHop: nh, Reason: v.err.Error()})
		}
	}
	p.reportRejected(rejected, false)
	return out, none
}

// resolveAll resolves each distinct next hop once, adding to verdicts, and
// appends the routes that keep a next hop to out, which may be learned[:0]
// (each route is written at or before the index it was read from).
func (p *Programmer) resolveAll(learned []Route, forbidden []netip.Prefix, verdicts map[netip.Addr]resolution, out []Route) ([]Route, []netip.Prefix, map[netip.Addr]resolution) {
	var none []netip.Prefix
	for _, r := range learned {
		if len(r.NextHops) == 1 {
			// The usual case, without an allocation: the resolution's
			// gateways are sorted and never written to, so routes share them.
			v, ok := verdicts[r.NextHops[0]]
			if !ok {
				v = p.resolve(r.NextHops[0], forbidden)
				verdicts[r.NextHops[0]] = v
			}
			if len(v.via) == 0 {
				none = append(none, r.Prefix)
				continue
			}
			r.NextHops = v.via
			out = append(out, r)
			continue
		}
		var nhs []netip.Addr
		for _, nh := range r.NextHops {
			v, ok := verdicts[nh]
			if !ok {
				v = p.resolve(nh, forbidden)
				verdicts[nh] = v
			}
			nhs = append(nhs, v.via...)
		}
		if len(nhs) == 0 {
			none = append(none, r.Prefix)
			continue
		}
		slices.SortFunc(nhs, netip.Addr.Compare)
		r.NextHops = slices.Compact(nhs)
		out = append(out, r)
	}
	return out, none, verdicts
}

type resolution struct {
	via []netip.Addr
	err error
}

func (p *Programmer) resolve(nh netip.Addr, forbidden []netip.Prefix) resolution {
	for _, f := range forbidden {
		if f.Contains(nh) {
			return resolution{err: fmt.Errorf("inside %s, the cluster's pod addresses", f)}
		}
	}
	via, err := p.table.Resolve(nh)
	slices.SortFunc(via, netip.Addr.Compare)
	return resolution{via: slices.Compact(via), err: err}
}

// reportRejected logs each next hop whose verdict changed; all says now
// is every refused next hop, so the others are forgotten.
func (p *Programmer) reportRejected(now []Rejected, all bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := map[netip.Addr]bool{}
	for _, r := range now {
		seen[r.NextHop] = true
		if p.rejected[r.NextHop] != r.Reason {
			p.log.Warn("learned next hop refused: its routes are not installed through it", "nextHop", r.NextHop, "reason", r.Reason)
		}
		p.rejected[r.NextHop] = r.Reason
	}
	for nh := range p.rejected {
		if all && !seen[nh] {
			delete(p.rejected, nh)
		}
	}
}
