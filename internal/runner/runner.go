// Package runner is the one loop that touches the dataplane. Events only
// Poke it; it calls the sync function at most once per minimum interval,
// retries failures with backoff, and runs a full resync periodically even
// when nothing pokes it, which repairs drift nobody reported.
package runner

import (
	"context"
	"log/slog"
	"time"
)

// Runner coalesces pokes into calls of one sync function.
type Runner struct {
	pokes       chan struct{}
	minInterval time.Duration
	resync      time.Duration
	maxBackoff  time.Duration
}

// New returns a runner that syncs at most once per minInterval and at
// least once per resync.
func New(minInterval, resync time.Duration) *Runner {
	return &Runner{pokes: make(chan struct{}, 1), minInterval: minInterval, resync: resync, maxBackoff: 10 * time.Second}
}

// Poke asks for a sync soon. It never blocks: pokes that arrive while one
// is pending merge into it.
func (r *Runner) Poke() {
	select {
	case r.pokes <- struct{}{}:
	default:
	}
}

// Run calls sync once at start, then on every poke or resync tick, until
// ctx ends. A failed sync is retried with exponential backoff from
// minInterval up to 10 s; pokes during the backoff do not shorten it.
func (r *Runner) Run(ctx context.Context, log *slog.Logger, sync func(context.Context) error) {
	backoff := time.Duration(0)
	timer := time.NewTimer(0) // the first sync runs at once
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.pokes:
			if backoff > 0 {
				continue // the retry timer is already set
			}
			timer.Reset(r.minInterval)
			continue
		case <-timer.C:
		}
		// Drain a poke that raced the timer: this sync covers it.
		select {
		case <-r.pokes:
		default:
		}
		start := time.Now()
		err := sync(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			backoff = min(max(2*backoff, r.minInterval), r.maxBackoff)
			log.Error("sync failed, retrying", "err", err, "in", backoff)
			timer.Reset(backoff)
		default:
			backoff = 0
			log.Debug("synced", "took", time.Since(start))
			timer.Reset(r.resync)
		}
	}
}
