package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func openTest(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func owner(id string) Owner {
	return Owner{Network: "petrel", ContainerID: id, IfName: "eth0", PodNamespace: "default", PodName: "p-" + id}
}

func ips(as []Allocation) string {
	var out []string
	for _, a := range as {
		out = append(out, a.IP.String())
	}
	return fmt.Sprint(out)
}

func TestAllocateDualStackIdempotent(t *testing.T) {
	s := openTest(t)
	ranges := []Range{mustRange(t, "fd00::/120"), mustRange(t, "10.0.0.0/24")}
	now := time.Unix(1700000000, 0)
	a, err := s.Allocate(ranges, owner("c1"), now)
	if err != nil {
		t.Fatal(err)
	}
	if got := ips(a); got != "[10.0.0.2 fd00::2]" {
		t.Fatalf("first allocation %s, want IPv4 first: [10.0.0.2 fd00::2]", got)
	}
	if a[0].PodName != "p-c1" || !a[0].Time.Equal(now) {
		t.Fatalf("record lost owner data: %+v", a[0])
	}
	again, err := s.Allocate(ranges, owner("c1"), now.Add(time.Hour))
	if err != nil || ips(again) != ips(a) {
		t.Fatalf("repeated ADD got %s %v, want the same %s", ips(again), err, ips(a))
	}
	b, _ := s.Allocate(ranges, owner("c2"), now)
	if ips(b) != "[10.0.0.3 fd00::3]" {
		t.Fatalf("second owner got %s", ips(b))
	}
}

func TestReleaseIsIdempotentAndNotReusedAtOnce(t *testing.T) {
	s := openTest(t)
	ranges := []Range{mustRange(t, "10.0.0.0/24")}
	s.Allocate(ranges, owner("c1"), time.Now())
	rel, err := s.Release(owner("c1"))
	if err != nil || ips(rel) != "[10.0.0.2]" {
		t.Fatalf("release got %s %v", ips(rel), err)
	}
	if rel, err := s.Release(owner("c1")); err != nil || len(rel) != 0 {
		t.Fatalf("second release got %v %v, want nothing and no error", rel, err)
	}
	a, _ := s.Allocate(ranges, owner("c2"), time.Now())
	if ips(a) != "[10.0.0.3]" {
		t.Fatalf("after release got %s, want 10.0.0.3 (round-robin)", ips(a))
	}
}

func TestExhaustedFallsThroughRanges(t *testing.T) {
	s := openTest(t)
	ranges := []Range{mustRange(t, "10.0.0.0/30"), mustRange(t, "10.0.1.0/30")}
	a, _ := s.Allocate(ranges, owner("c1"), time.Now())
	b, _ := s.Allocate(ranges, owner("c2"), time.Now())
	if ips(a) != "[10.0.0.2]" || ips(b) != "[10.0.1.2]" {
		t.Fatalf("got %s %s, want the second range used once the first is full", ips(a), ips(b))
	}
	_, err := s.Allocate(ranges, owner("c3"), time.Now())
	if !errors.Is(err, ErrExhausted) {
		t.Fatalf("got %v, want ErrExhausted", err)
	}
	if all, _ := s.List(""); len(all) != 2 {
		t.Fatalf("a failed allocation left records: %v", ips(all))
	}
}

func TestGCKeepsValidReleasesRest(t *testing.T) {
	s := openTest(t)
	ranges := []Range{mustRange(t, "10.0.0.0/24")}
	for _, id := range []string{"a", "b", "c"} {
		s.Allocate(ranges, owner(id), time.Now())
	}
	other := Owner{Network: "other", ContainerID: "x", IfName: "eth0"}
	s.Allocate(ranges, other, time.Now())
	rel, err := s.GC("petrel", func(id, ifname string) bool { return id == "b" && ifname == "eth0" })
	if err != nil {
		t.Fatal(err)
	}
	if ips(rel) != "[10.0.0.2 10.0.0.4]" {
		t.Fatalf("GC released %s, want a and c", ips(rel))
	}
	left, _ := s.List("")
	if ips(left) != "[10.0.0.3 10.0.0.5]" {
		t.Fatalf("left %s, want b and the other network's address", ips(left))
	}
}

func TestOpenLockedTimesOut(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, err = Open(dir, 50*time.Millisecond)
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open got %v, want ErrLocked", err)
	}
}

func TestAllocationsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s, _ := Open(dir, time.Second)
	a, _ := s.Allocate([]Range{mustRange(t, "10.0.0.0/24")}, owner("c1"), time.Now())
	s.Close()
	s, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, _ := s.Get(owner("c1"))
	if ips(got) != ips(a) || got[0].IP != netip.MustParseAddr("10.0.0.2") {
		t.Fatalf("after reopen got %s, want %s", ips(got), ips(a))
	}
}

func TestOpenWaitsForLockHolder(t *testing.T) {
	dir := t.TempDir()
	first, err := Open(dir, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	opened := make(chan error, 1)
	go func() {
		s, err := Open(dir, 5*time.Second)
		if err == nil {
			s.Close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("second open returned %v while the first held the lock", err)
	case <-time.After(50 * time.Millisecond):
	}
	first.Close()
	if err := <-opened; err != nil {
		t.Fatalf("second open after the holder closed: %v", err)
	}
}
