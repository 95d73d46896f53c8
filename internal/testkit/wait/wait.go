// Package wait polls a condition until it holds or a limit passes: the one
// helper tests use for anything that happens asynchronously (informers,
// BGP sessions, kernel routes), instead of sleeping and hoping.
package wait

import (
	"fmt"
	"testing"
	"time"
)

// Interval is how often a condition is polled.
const Interval = 10 * time.Millisecond

// For polls cond until it returns true, and returns how long that took; an
// error names what did not happen within limit.
func For(limit time.Duration, what string, cond func() bool) (time.Duration, error) {
	start := time.Now()
	for deadline := start.Add(limit); ; time.Sleep(Interval) {
		if cond() {
			return time.Since(start), nil
		}
		if time.Now().After(deadline) {
			return time.Since(start), fmt.Errorf("%s: not within %s", what, limit)
		}
	}
}

// Until is For in a test: it fails the test when cond does not hold in time.
func Until(t testing.TB, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	d, err := For(limit, what, cond)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Equal polls f until it returns want, and fails the test with the last
// value otherwise.
func Equal[T comparable](t testing.TB, limit time.Duration, what string, want T, f func() T) {
	t.Helper()
	var got T
	if _, err := For(limit, what, func() bool { got = f(); return got == want }); err != nil {
		t.Fatalf("%s: got %v, want %v", what, got, want)
	}
}
