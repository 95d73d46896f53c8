package runner

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestPokesCoalesce(t *testing.T) {
	r := New(30*time.Millisecond, time.Hour)
	var calls atomic.Int32
	synced := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, quiet, func(context.Context, bool) error { calls.Add(1); synced <- struct{}{}; return nil }, nil)
	<-synced // the start-up sync
	for range 100 {
		r.Poke()
	}
	<-synced
	select {
	case <-synced:
		t.Fatalf("100 pokes gave %d syncs, want 1", calls.Load()-1)
	case <-time.After(200 * time.Millisecond):
	}
}

func TestFailureRetriesWithoutPokes(t *testing.T) {
	r := New(10*time.Millisecond, time.Hour)
	var calls atomic.Int32
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, quiet, func(context.Context, bool) error {
		if calls.Add(1) < 4 {
			return errors.New("netlink busy")
		}
		close(done)
		return nil
	}, nil)
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("no successful retry after %d calls", calls.Load())
	}
}

func TestPeriodicResync(t *testing.T) {
	r := New(time.Millisecond, 20*time.Millisecond)
	synced := make(chan struct{}, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, quiet, func(context.Context, bool) error { synced <- struct{}{}; return nil }, nil)
	for i := range 3 {
		select {
		case <-synced:
		case <-time.After(5 * time.Second):
			t.Fatalf("sync %d did not come without a poke", i)
		}
	}
}

// A steady stream of pokes must not starve the loop: it still syncs about
// once per minimum interval.
func TestStreamOfPokesStillSyncs(t *testing.T) {
	r := New(20*time.Millisecond, time.Hour)
	synced := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, quiet, func(context.Context, bool) error { synced <- struct{}{}; return nil }, nil)
	<-synced
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				r.Poke()
				time.Sleep(time.Millisecond)
			}
		}
	}()
	defer close(stop)
	for i := range 3 {
		select {
		case <-synced:
		case <-time.After(5 * time.Second):
			t.Fatalf("sync %d starved by a stream of pokes", i)
		}
	}
}

// The first sync and the periodic ones are resyncs; a poke between them is
// not, and does not push the next resync back.
func TestResyncFlag(t *testing.T) {
	r := New(time.Millisecond, 300*time.Millisecond)
	got := make(chan bool, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, quiet, func(_ context.Context, resync bool) error { got <- resync; return nil }, nil)
	next := func() bool {
		t.Helper()
		select {
		case v := <-got:
			return v
		case <-time.After(5 * time.Second):
			t.Fatal("no sync")
			return false
		}
	}
	if !next() {
		t.Fatal("the first sync is not a resync")
	}
	r.Poke()
	if next() {
		t.Fatal("a poked sync right after the first was a resync")
	}
	if !next() {
		t.Fatal("the periodic sync was not a resync")
	}
}

// TestFastRunsAtOnceAndAlone: PokeFast runs the fast function without
// waiting for the minimum interval and without a full sync; a failed fast
// run schedules a full sync.
func TestFastRunsAtOnceAndAlone(t *testing.T) {
	r := New(time.Hour, time.Hour) // after the start-up sync, no sync unless asked
	synced, fasts := make(chan struct{}, 10), make(chan struct{}, 10)
	var fail atomic.Bool
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, quiet, func(context.Context, bool) error { synced <- struct{}{}; return nil },
		func(context.Context) error {
			fasts <- struct{}{}
			if fail.Load() {
				return errors.New("netlink busy")
			}
			return nil
		})
	<-synced
	for i := range 3 {
		r.PokeFast()
		select {
		case <-fasts:
		case <-time.After(5 * time.Second):
			t.Fatalf("fast poke %d: the fast function did not run", i)
		}
	}
	select {
	case <-synced:
		t.Fatal("a fast poke ran the full sync")
	case <-time.After(100 * time.Millisecond):
	}
	// The minimum interval is an hour since the start-up sync: a failed fast
	// run still gets the repairing sync, at the first moment allowed.
	r2 := New(20*time.Millisecond, time.Hour)
	synced2 := make(chan struct{}, 10)
	go r2.Run(ctx, quiet, func(context.Context, bool) error { synced2 <- struct{}{}; return nil },
		func(context.Context) error { return errors.New("netlink busy") })
	<-synced2
	r2.PokeFast()
	select {
	case <-synced2:
	case <-time.After(5 * time.Second):
		t.Fatal("a failed fast run did not schedule a sync")
	}
}

// TestFastInterval: fast pokes within FastInterval of the last run wait
// for its end and merge into one run.
func TestFastInterval(t *testing.T) {
	r := New(time.Hour, time.Hour)
	r.FastInterval = 100 * time.Millisecond
	runs := make(chan time.Time, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx, quiet, func(context.Context, bool) error { return nil },
		func(context.Context) error { runs <- time.Now(); return nil })
	r.PokeFast()
	first := <-runs
	for range 10 {
		r.PokeFast()
		time.Sleep(time.Millisecond)
	}
	second := <-runs
	if gap := second.Sub(first); gap < r.FastInterval {
		t.Fatalf("second run %v after the first, want at least %v", gap, r.FastInterval)
	}
	select {
	case <-runs:
		t.Fatal("ten pokes within the interval ran more than once")
	case <-time.After(300 * time.Millisecond):
	}
}
