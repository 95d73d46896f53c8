package route

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
)

// Table is the kernel routing table as Sync sees it: only Petrel's routes.
type Table interface {
	List() ([]Route, error)
	// Apply replaces, then removes, and returns one error or nil per route
	// (replacements first). Removing a route already gone is success.
	Apply(replace, remove []Route) []error
}

// Programmer keeps a Table equal to the desired routes.
//
// It remembers what it installed, so a sync during a flood of updates
// does not dump the whole kernel table each time. The memory is dropped,
// and the next sync lists the kernel again, when Invalidate is called
// (someone else touched a route: see Watch; or the agent's periodic
// resync, which is the one clock that decides when to distrust memory),
// and after any failed change.
type Programmer struct {
	table Table
	log   *slog.Logger

	mu        sync.Mutex
	installed map[netip.Prefix]Route // nil: unknown, list the kernel
}

// New returns a Programmer over table.
func New(table Table, log *slog.Logger) *Programmer {
	return &Programmer{table: table, log: log}
}

// Invalidate makes the next Sync list the kernel instead of trusting what
// it installed. Safe to call from any goroutine.
func (p *Programmer) Invalidate() {
	p.mu.Lock()
	p.installed = nil
	p.mu.Unlock()
}

// current returns what the table holds, from memory when it can.
func (p *Programmer) current() ([]Route, error) {
	p.mu.Lock()
	cached := p.installed
	p.mu.Unlock()
	if cached != nil {
		out := make([]Route, 0, len(cached))
		for _, r := range cached {
			out = append(out, r)
		}
		return out, nil
	}
	have, err := p.table.List()
	if err != nil {
		return nil, err
	}
	m := make(map[netip.Prefix]Route, len(have))
	for _, r := range have {
		m[r.Prefix] = r
	}
	p.mu.Lock()
	p.installed = m
	p.mu.Unlock()
	return have, nil
}

// Result says what a Sync changed.
type Result struct {
	Replaced, Removed int
}

// Sync makes the table hold exactly want. It is idempotent: with the table
// already equal to want it changes nothing. Independent failures are all
// attempted and joined; a duplicate or malformed desired route is an error
// before anything is touched.
func (p *Programmer) Sync(ctx context.Context, want []Route) (Result, error) {
	seen := map[netip.Prefix]bool{}
	for _, r := range want {
		if err := r.validate(); err != nil {
			return Result{}, err
		}
		if seen[r.Prefix] {
			return Result{}, fmt.Errorf("route %s: desired twice", r.Prefix)
		}
		seen[r.Prefix] = true
	}
	have, err := p.current()
	if err != nil {
		return Result{}, fmt.Errorf("list routes: %w", err)
	}
	replace, remove := Diff(have, want)
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	var res Result
	var errs []error
	for i, err := range p.table.Apply(replace, remove) {
		r, verb := replace, "replace"
		if i >= len(replace) {
			r, verb, i = remove, "delete", i-len(replace)
		}
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %s: %w", verb, r[i], err))
		case verb == "replace":
			res.Replaced++
		default:
			res.Removed++
		}
	}
	p.remember(replace, remove, len(errs) > 0)
	if res != (Result{}) {
		p.log.Debug("routes synced", "replaced", res.Replaced, "removed", res.Removed)
	}
	return res, errors.Join(errs...)
}

// remember folds an applied change into the memory of the table; after a
// failure the kernel's state is uncertain, so the next sync lists it.
func (p *Programmer) remember(replace, remove []Route, failed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if failed || p.installed == nil {
		p.installed = nil
		return
	}
	for _, r := range replace {
		p.installed[r.Prefix] = r
	}
	for _, r := range remove {
		delete(p.installed, r.Prefix)
	}
}
