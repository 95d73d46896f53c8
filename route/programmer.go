package route

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
)

// Table is the kernel routing table as Sync sees it: only Petrel's routes.
type Table interface {
	List() ([]Route, error)
	// Apply adds, changes, then removes, and returns one error or nil per
	// route in that order. An add fails with ErrHeld where a route Petrel
	// does not own holds the prefix; nothing else is ever replaced.
	// Removing a route already gone is success.
	Apply(add, change, remove []Route) []error
	// Resolve says through which gateways the kernel reaches nh: nh itself
	// when it is on a connected subnet. It refuses a local address and an
	// address reached only through Petrel's own routes, or not at all.
	Resolve(nh netip.Addr) ([]netip.Addr, error)
}

// ErrHeld is the outcome of adding a route whose prefix a route of another
// protocol holds. Petrel leaves that route alone and adds its own once the
// other is gone.
var ErrHeld = errors.New("the prefix is held by a route Petrel does not own")

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
	installed table // nil: unknown, list the kernel
	// held are the wanted routes a foreign route keeps out; each is tried
	// again at every sync, and reported once when it starts and ends.
	held map[netip.Prefix]Route
	// rejected are the learned next hops last refused, with the reason.
	rejected map[netip.Addr]string
	// resolved are the next hops' verdicts as of the last Resolve (and
	// those ResolveChanged added since); nil after Invalidate.
	resolved map[netip.Addr]resolution
}

// New returns a Programmer over table.
func New(table Table, log *slog.Logger) *Programmer {
	return &Programmer{table: table, log: log, held: map[netip.Prefix]Route{}, rejected: map[netip.Addr]string{}}
}

// Invalidate makes the next Sync list the kernel instead of trusting what
// it installed. Safe to call from any goroutine.
func (p *Programmer) Invalidate() {
	p.mu.Lock()
	p.installed, p.resolved = nil, nil
	p.mu.Unlock()
}

// table is what Petrel's routes are, by prefix: a route's next hops, none
// for a blackhole. Half the size of a map of Routes: at 100,000 learned
// routes the difference is 5 MB.
type table map[netip.Prefix][]netip.Addr

func (t table) get(prefix netip.Prefix) (Route, bool) {
	nhs, ok := t[prefix]
	return Route{Prefix: prefix, NextHops: nhs, Blackhole: ok && len(nhs) == 0}, ok
}

func (t table) put(r Route) { t[r.Prefix] = r.NextHops }

// current returns what the table holds, from memory when it can. Only
// Sync (never concurrent with itself) changes the map it returns;
// Invalidate merely drops it.
func (p *Programmer) current() (table, error) {
	p.mu.Lock()
	cached := p.installed
	p.mu.Unlock()
	if cached != nil {
		return cached, nil
	}
	have, err := p.table.List()
	if err != nil {
		return nil, err
	}
	m := make(table, len(have))
	for _, r := range have {
		m.put(r)
	}
	p.mu.Lock()
	p.installed = m
	p.mu.Unlock()
	return m, nil
}

// Result says what a Sync changed, and how many wanted routes foreign
// routes keep out of the table.
type Result struct {
	Replaced, Removed, Held int
	// Installed is how many routes the table holds afterwards (when the
	// change succeeded).
	Installed int
}

// Sync makes the table hold exactly want. It is idempotent: with the table
// already equal to want it changes nothing. Independent failures are all
// attempted and joined; a duplicate or malformed desired route is an error
// before anything is touched.
func (p *Programmer) Sync(ctx context.Context, want []Route) (Result, error) {
	return p.sync(ctx, want, true)
}

// SyncKeeping is Sync that removes nothing: Petrel's routes that want does
// not name stay as they are. For a starting agent, whose sessions have not
// yet brought back what the previous one installed.
func (p *Programmer) SyncKeeping(ctx context.Context, want []Route) (Result, error) {
	return p.sync(ctx, want, false)
}

func (p *Programmer) sync(ctx context.Context, want []Route, removeOthers bool) (Result, error) {
	// One pass over want against the installed routes, one set of the
	// wanted prefixes: during a flood of updates Sync runs every few
	// milliseconds over the whole table, so it must not rebuild it.
	have, err := p.current()
	if err != nil {
		return Result{}, fmt.Errorf("list routes: %w", err)
	}
	wanted := make(map[netip.Prefix]struct{}, len(want))
	var add, change, remove []Route
	for _, r := range want {
		if err := r.validate(); err != nil {
			return Result{}, err
		}
		if _, dup := wanted[r.Prefix]; dup {
			return Result{}, fmt.Errorf("route %s: desired twice", r.Prefix)
		}
		wanted[r.Prefix] = struct{}{}
		switch cur, ok := have.get(r.Prefix); {
		case !ok:
			add = append(add, r.normal())
		case !cur.equal(r):
			change = append(change, r.normal())
		}
	}
	for prefix := range have {
		if _, ok := wanted[prefix]; !ok && removeOthers {
			r, _ := have.get(prefix)
			remove = append(remove, r)
		}
	}
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	for _, rs := range [][]Route{add, change, remove} {
		slices.SortFunc(rs, byPrefix)
	}
	res, held, _, errs := p.apply(add, change, remove)
	p.reportHeld(held, wanted)
	res.Held = len(p.held)
	if res.Replaced+res.Removed > 0 {
		p.log.Debug("routes synced", "replaced", res.Replaced, "removed", res.Removed)
	}
	return res, errors.Join(errs...)
}

// apply makes the changes and remembers them. It returns what they did,
// the adds a foreign route held off, the routes added or replaced, and the
// failures.
func (p *Programmer) apply(add, change, remove []Route) (Result, map[netip.Prefix]Route, []Route, []error) {
	var res Result
	var errs []error
	held := map[netip.Prefix]Route{}
	done := make([]Route, 0, len(add)+len(change))
	var gone []Route
	for i, err := range p.table.Apply(add, change, remove) {
		r, verb := applied(i, add, change, remove)
		switch {
		case errors.Is(err, ErrHeld):
			held[r.Prefix] = r
		case err != nil:
			errs = append(errs, fmt.Errorf("%s %s: %w", verb, r, err))
		case verb == "delete":
			res.Removed++
			gone = append(gone, r)
		default:
			res.Replaced++
			done = append(done, r)
		}
	}
	res.Installed = p.remember(done, gone, len(errs) > 0)
	return res, held, done, errs
}

// applied is the i-th route of an Apply, and what was done with it.
func applied(i int, add, change, remove []Route) (Route, string) {
	switch {
	case i < len(add):
		return add[i], "add"
	case i < len(add)+len(change):
		return change[i-len(add)], "replace"
	}
	return remove[i-len(add)-len(change)], "delete"
}

// reportHeld logs each prefix a foreign route starts or stops holding.
// A held route that is no longer wanted is simply forgotten.
func (p *Programmer) reportHeld(now map[netip.Prefix]Route, wanted map[netip.Prefix]struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for prefix, r := range now {
		if _, known := p.held[prefix]; !known {
			p.log.Warn("learned route not installed: a route Petrel does not own holds the prefix; it stays, and Petrel's goes in once it is gone", "prefix", prefix, "route", r.String())
		}
		p.held[prefix] = r
	}
	for prefix := range p.held {
		if _, still := now[prefix]; still {
			continue
		}
		if _, ok := wanted[prefix]; ok {
			p.log.Info("route installed: the prefix is free again", "prefix", prefix)
		}
		delete(p.held, prefix)
	}
}

// Held are the wanted prefixes that routes of other protocols keep out of
// the table, as of the last Sync.
func (p *Programmer) Held() []netip.Prefix {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]netip.Prefix, 0, len(p.held))
	for prefix := range p.held {
		out = append(out, prefix)
	}
	slices.SortFunc(out, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	return out
}

// remember folds an applied change into the memory of the table, and
// returns how many routes it holds; after a failure the kernel's state is
// uncertain, so the next sync lists it.
func (p *Programmer) remember(replace, remove []Route, failed bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if failed || p.installed == nil {
		p.installed = nil
		return 0
	}
	for _, r := range replace {
		p.installed.put(r)
	}
	for _, r := range remove {
		delete(p.installed, r.Prefix)
	}
	return len(p.installed)
}
