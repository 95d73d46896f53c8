// Package runner is the one loop that touches the dataplane. Events only
// Poke it; it calls the sync function at most once per minimum interval,
// retries failures with backoff, and runs a full resync periodically even
// when nothing pokes it, which repairs drift nobody reported. It is the
// agent's one resync clock: the sync function is told which calls are the
// periodic resync, and the dataplane pieces are told to distrust what they
// remember of the kernel then. Between syncs, the one kind of event that
// comes in floods and needs no full sync (learned routes) runs a fast
// function of its own at once (PokeFast).
package runner

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"
)

// Runner coalesces pokes into calls of one sync function.
type Runner struct {
	pokes, fast chan struct{}
	minInterval time.Duration
	// FastInterval spaces runs of the fast function: a poke within it of
	// the last run's start waits for its end. Set it before Run.
	FastInterval time.Duration
	fastPending  atomic.Bool // a fast run is asked for and has not started
	resync       time.Duration
	maxBackoff   time.Duration
}

// New returns a runner that syncs at most once per minInterval and at
// least once per resync.
func New(minInterval, resync time.Duration) *Runner {
	return &Runner{pokes: make(chan struct{}, 1), fast: make(chan struct{}, 1), minInterval: minInterval, resync: resync, maxBackoff: 10 * time.Second}
}

// Poke asks for a sync soon. It never blocks: pokes that arrive while one
// is pending merge into it.
func (r *Runner) Poke() {
	select {
	case r.pokes <- struct{}{}:
	default:
	}
}

// PokeFast asks for the fast function at once. It never blocks: pokes that
// arrive while a run is pending merge into it without waking the loop (a
// flood of best-path events would otherwise wake it for each one).
func (r *Runner) PokeFast() {
	if r.fastPending.Swap(true) {
		return
	}
	select {
	case r.fast <- struct{}{}:
	default:
	}
}

// Run calls sync once at start, then on every poke or resync tick, until
// ctx ends. resync is true for the first call and for every call that
// starts a resync interval or more after the last successful resync (a
// failed resync is retried as one). A poke schedules a sync minInterval after the start of the last
// one (at once if that is past); later pokes never push it back, so a steady
// stream of events still gets a sync every minInterval. A failed sync is
// retried with exponential backoff from minInterval up to 10 s; pokes during
// the backoff do not shorten it.
//
// fast (if not nil) runs on the same goroutine, so never beside sync, at
// a PokeFast: at once when FastInterval has passed since its last run,
// else when it has; a flood of pokes runs it every FastInterval, each run
// taking what piled up meanwhile. It is not held back by a failing sync's
// backoff; when it fails, a sync is scheduled as after a Poke, to repair
// what it could not.
func (r *Runner) Run(ctx context.Context, log *slog.Logger, sync func(ctx context.Context, resync bool) error, fast func(ctx context.Context) error) {
	var backoff time.Duration
	var lastStart, lastResync time.Time
	due := time.Now()
	timer := time.NewTimer(0) // the first sync runs at once
	defer timer.Stop()
	schedule := func(at time.Time) {
		due = at
		timer.Reset(time.Until(at))
	}
	var lastFast time.Time
	fastTimer := time.NewTimer(time.Hour)
	fastTimer.Stop()
	defer fastTimer.Stop()
	runFast := func() {
		r.fastPending.Store(false) // pokes from now on ask for the next run
		lastFast = time.Now()
		if err := fast(ctx); err != nil && ctx.Err() == nil {
			log.Warn("fast sync failed; a full sync follows", "err", err)
			if at := lastStart.Add(r.minInterval); backoff == 0 && at.Before(due) {
				schedule(at)
			}
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.pokes:
			if at := lastStart.Add(r.minInterval); backoff == 0 && at.Before(due) {
				schedule(at)
			}
			continue
		case <-r.fast:
			switch wait := time.Until(lastFast.Add(r.FastInterval)); {
			case fast == nil:
			case wait > 0:
				fastTimer.Reset(wait)
			default:
				runFast()
			}
			continue
		case <-fastTimer.C:
			runFast()
			continue
		case <-timer.C:
		}
		// Drain a poke that raced the timer: this sync covers it.
		select {
		case <-r.pokes:
		default:
		}
		lastStart = time.Now()
		resync := lastResync.IsZero() || lastStart.Sub(lastResync) >= r.resync
		err := sync(ctx, resync)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			backoff = min(max(2*backoff, r.minInterval), r.maxBackoff)
			log.Error("sync failed, retrying", "err", err, "in", backoff)
			schedule(time.Now().Add(backoff))
		default:
			backoff = 0
			if resync {
				lastResync = lastStart
			}
			log.Debug("synced", "took", time.Since(lastStart), "resync", resync)
			schedule(lastResync.Add(r.resync))
		}
	}
}
