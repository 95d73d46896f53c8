package kube

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
)

// leaseLock is one candidate in an election over a coordination.k8s.io
// Lease: client-go's leader election (tools/leaderelection with a
// LeaseLock), written out for the one lease Petrel holds because that
// package links the whole clientset. Same record, same rules: a holder's
// lease is valid for its duration from when this candidate last saw the
// record change (its own clock, never the holder's timestamps), every
// write carries the resourceVersion it read, and a clean exit releases the
// lease so the next candidate takes over at once.
type leaseLock struct {
	c         rest.Interface // coordination.k8s.io/v1
	namespace string
	name      string
	id        string
	times     leaseTimes
	log       *slog.Logger
	lastErr   string // the last error logged

	lease      *coordinationv1.Lease // the last version read or written
	observedAt time.Time             // when lease last changed as seen here
}

// leaseTimes are an election's timers: the lease's duration, how long a
// holder keeps trying to renew before it gives up, and the retry period.
type leaseTimes struct{ duration, renew, retry time.Duration }

// elect stands until ctx ends; while this candidate holds the lease, lead
// runs with a context that ends when it is lost. elect returns after lead
// has, with the lease released.
func (l *leaseLock) elect(ctx context.Context, lead func(context.Context)) {
	for !l.tryAcquireOrRenew(ctx) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(jitter(l.times.retry)):
		}
	}
	lctx, lost := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); lead(lctx) }()
	for renewed := time.Now(); ctx.Err() == nil; {
		select {
		case <-ctx.Done():
			continue
		case <-time.After(l.times.retry):
		}
		rctx, cancel := context.WithTimeout(ctx, l.times.retry)
		ok := l.tryAcquireOrRenew(rctx)
		cancel()
		if ok {
			renewed = time.Now()
		} else if time.Since(renewed) >= l.times.renew {
			break // lost: someone else may hold it by now
		}
	}
	lost()
	<-done
	l.release()
}

// holding reports whether the last record seen names this candidate.
func (l *leaseLock) holding() bool {
	return l.lease != nil && l.lease.Spec.HolderIdentity != nil && *l.lease.Spec.HolderIdentity == l.id
}

// valid reports whether the last record seen is still in force here.
func (l *leaseLock) valid(now time.Time) bool {
	d := time.Duration(0)
	if s := l.lease.Spec.LeaseDurationSeconds; s != nil {
		d = time.Duration(*s) * time.Second
	}
	return l.observedAt.Add(d).After(now)
}

// tryAcquireOrRenew takes or renews the lease and reports whether this
// candidate holds it now.
func (l *leaseLock) tryAcquireOrRenew(ctx context.Context) bool {
	now := time.Now()
	if l.lease != nil && l.holding() && l.valid(now) { // the holder's fast path
		if l.write(ctx, l.record(now, false)) == nil {
			return true
		}
	}
	cur := &coordinationv1.Lease{}
	err := l.c.Get().Namespace(l.namespace).Resource("leases").Name(l.name).Do(ctx).Into(cur)
	if apierrors.IsNotFound(err) {
		create := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: l.name, Namespace: l.namespace}}
		l.lease = nil
		create.Spec = l.record(now, true)
		out := &coordinationv1.Lease{}
		if err := l.c.Post().Namespace(l.namespace).Resource("leases").Body(create).Do(ctx).Into(out); err != nil {
			l.logErr("create", err)
			return false
		}
		l.lease, l.observedAt = out, now
		return true
	}
	if err != nil {
		l.logErr("read", err)
		return false
	}
	if l.lease == nil || l.lease.ResourceVersion != cur.ResourceVersion {
		l.observedAt = now
	}
	l.lease = cur
	held := cur.Spec.HolderIdentity != nil && *cur.Spec.HolderIdentity != ""
	if held && !l.holding() && l.valid(now) {
		return false
	}
	err = l.write(ctx, l.record(now, !l.holding()))
	if err != nil && !apierrors.IsConflict(err) {
		l.logErr("update", err)
	}
	return err == nil
}

// logErr logs an error of the election once per change of its text.
func (l *leaseLock) logErr(op string, err error) {
	if msg := op + ": " + err.Error(); msg != l.lastErr && l.log != nil {
		l.log.Warn("lease election", "lease", l.namespace+"/"+l.name, "op", op, "err", err)
		l.lastErr = msg
	}
}

// record is the lease's spec with this candidate holding it since now
// (taking over) or since it took it (renewing).
func (l *leaseLock) record(now time.Time, takeOver bool) coordinationv1.LeaseSpec {
	id, secs, t, transitions := l.id, int32(l.times.duration/time.Second), metav1.NewMicroTime(now), int32(0)
	s := coordinationv1.LeaseSpec{HolderIdentity: &id, LeaseDurationSeconds: &secs, AcquireTime: &t, RenewTime: &t, LeaseTransitions: &transitions}
	if l.lease == nil {
		return s // a new lease
	}
	if p := l.lease.Spec.LeaseTransitions; p != nil {
		transitions = *p
	}
	if takeOver {
		transitions++
	} else {
		s.AcquireTime = l.lease.Spec.AcquireTime
	}
	return s
}

// write replaces the last version read with spec; a conflict means another
// candidate wrote first.
func (l *leaseLock) write(ctx context.Context, spec coordinationv1.LeaseSpec) error {
	upd := l.lease.DeepCopy()
	upd.Spec = spec
	out := &coordinationv1.Lease{}
	err := l.c.Put().Namespace(l.namespace).Resource("leases").Name(l.name).Body(upd).Do(ctx).Into(out)
	if err == nil {
		l.lease, l.observedAt = out, time.Now()
	}
	return err
}

// release gives the lease up if this candidate holds it: no holder, a
// one-second duration, so the next candidate need not wait it out.
func (l *leaseLock) release() {
	if l.lease == nil || !l.holding() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.times.renew)
	defer cancel()
	now, none, one := metav1.NewMicroTime(time.Now()), "", int32(1)
	spec := l.lease.Spec
	spec.HolderIdentity, spec.LeaseDurationSeconds, spec.AcquireTime, spec.RenewTime = &none, &one, &now, &now
	_ = l.write(ctx, spec)
}

// jitter is d plus up to a fifth: candidates do not retry in step.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/5+1))
}
