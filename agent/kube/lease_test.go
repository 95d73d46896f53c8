package kube

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/petrelnet/petrel/internal/testkit/kubetest"
)

// TestLeaseElection runs the election's rules against a real API server:
// a held lease is respected for its duration from when a candidate saw it
// change, a crashed holder is replaced after that, a holder that slept
// through its lease cannot overwrite its successor, and a released lease
// is taken at once.
func TestLeaseElection(t *testing.T) {
	s := kubetest.Start(t)
	admin := clientFor(t, s)
	c := agentClient(t, s.RestConfig())
	ctx := context.Background()
	times := leaseTimes{duration: 2 * time.Second, renew: time.Second, retry: 100 * time.Millisecond}
	cand := func(id string) *leaseLock {
		return &leaseLock{c: c.coordination, namespace: "default", name: "test-lease", id: id, times: times, log: testLog(t)}
	}
	holder := func() (string, int32) {
		l, err := admin.CoordinationV1().Leases("default").Get(ctx, "test-lease", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return *l.Spec.HolderIdentity, *l.Spec.LeaseTransitions
	}
	a, b := cand("a"), cand("b")
	if !a.tryAcquireOrRenew(ctx) {
		t.Fatal("a could not create the lease")
	}
	if h, n := holder(); h != "a" || n != 0 {
		t.Fatalf("holder %q transitions %d, want a 0", h, n)
	}

	// a stops renewing (a crash): b waits out the lease, then takes it.
	start := time.Now()
	for !b.tryAcquireOrRenew(ctx) {
		if time.Since(start) > 5*time.Second {
			t.Fatal("b never took over a lease nobody renews")
		}
		time.Sleep(times.retry)
	}
	if took := time.Since(start); took < times.duration {
		t.Fatalf("b took a's valid lease after %v (duration %v)", took, times.duration)
	}
	if h, n := holder(); h != "b" || n != 1 {
		t.Fatalf("holder %q transitions %d, want b 1", h, n)
	}

	// a wakes up believing it still holds the lease: its renewal carries
	// the version it last saw, so it loses to b's write.
	a.observedAt = time.Now()
	if a.tryAcquireOrRenew(ctx) {
		t.Fatal("a overwrote b's lease")
	}
	if h, _ := holder(); h != "b" {
		t.Fatalf("holder %q, want b", h)
	}

	// b leads until its context ends, then releases: a takes over at once.
	bctx, stopB := context.WithCancel(ctx)
	led := make(chan struct{})
	go b.elect(bctx, func(ctx context.Context) { close(led); <-ctx.Done() })
	select {
	case <-led:
	case <-time.After(5 * time.Second):
		t.Fatal("b, holding the lease, did not lead")
	}
	time.Sleep(3 * times.retry) // a few renewals
	if h, _ := holder(); h != "b" {
		t.Fatalf("holder %q while b renews, want b", h)
	}
	stopB()
	released := time.Now()
	for !a.tryAcquireOrRenew(ctx) {
		if time.Since(released) > times.duration/2 {
			t.Fatal("a did not take a released lease at once")
		}
		time.Sleep(times.retry)
	}
	if h, n := holder(); h != "a" || n != 2 {
		t.Fatalf("holder %q transitions %d, want a 2", h, n)
	}
}
