package route

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// Update applies a change set: changed are routes to have (added, or
// replaced where Petrel's route for the prefix differs), gone the prefixes
// whose routes must go. It is Sync for a few prefixes during a flood of
// BGP updates: it touches only these, and costs what they cost, not what
// the table holds. The rules are Sync's: a prefix held by a route Petrel
// does not own stays held (and is tried again at every Sync), nothing but
// Petrel's routes is replaced or removed, and after a failure the next Sync
// lists the kernel. A prefix in both lists is an error before anything is
// touched, as is a malformed route.
func (p *Programmer) Update(ctx context.Context, changed []Route, gone []netip.Prefix) (Result, error) {
	have, err := p.current()
	if err != nil {
		return Result{}, fmt.Errorf("list routes: %w", err)
	}
	add := make([]Route, 0, len(changed)) // during a flood, mostly new prefixes
	var change, remove []Route
	for _, r := range changed {
		if err := r.validate(); err != nil {
			return Result{}, err
		}
		switch cur, ok := have.get(r.Prefix); {
		case !ok:
			add = append(add, r.normal())
		case !cur.equal(r):
			change = append(change, r.normal())
		}
	}
	var both map[netip.Prefix]struct{}
	if len(gone) > 0 && len(changed) > 0 {
		both = make(map[netip.Prefix]struct{}, len(changed))
		for _, r := range changed {
			both[r.Prefix] = struct{}{}
		}
	}
	for _, prefix := range gone {
		if _, dup := both[prefix]; dup {
			return Result{}, fmt.Errorf("route %s: both changed and gone", prefix)
		}
		if cur, ok := have.get(prefix); ok {
			remove = append(remove, cur)
		}
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	res, held, done, errs := p.apply(add, change, remove)
	p.mu.Lock()
	for prefix, r := range held {
		if _, known := p.held[prefix]; !known {
			p.log.Warn("learned route not installed: a route Petrel does not own holds the prefix; it stays, and Petrel's goes in once it is gone", "prefix", prefix, "route", r.String())
		}
		p.held[prefix] = r
	}
	for _, r := range done {
		if _, ok := p.held[r.Prefix]; ok {
			p.log.Info("route installed: the prefix is free again", "prefix", r.Prefix)
			delete(p.held, r.Prefix)
		}
	}
	for _, prefix := range gone {
		delete(p.held, prefix)
	}
	res.Held = len(p.held)
	p.mu.Unlock()
	return res, errors.Join(errs...)
}
