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
	go r.Run(ctx, quiet, func(context.Context, bool) error { calls.Add(1); synced <- struct{}{}; return nil })
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
	})
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
	go r.Run(ctx, quiet, func(context.Context, bool) error { synced <- struct{}{}; return nil })
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
	go r.Run(ctx, quiet, func(context.Context, bool) error { synced <- struct{}{}; return nil })
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
	go r.Run(ctx, quiet, func(_ context.Context, resync bool) error { got <- resync; return nil })
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
