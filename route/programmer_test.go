package route

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// fakeTable is an in-memory table that prints itself like `ip route`.
type fakeTable struct {
	routes  map[netip.Prefix]Route
	foreign map[netip.Prefix]string // routes of other protocols, by prefix
	failFor netip.Prefix
	calls   int
	asked   []netip.Addr // next hops Resolve was asked about
}

func newFake(rs ...Route) *fakeTable {
	f := &fakeTable{routes: map[netip.Prefix]Route{}, foreign: map[netip.Prefix]string{}}
	for _, r := range rs {
		f.routes[r.Prefix] = r
	}
	return f
}

func (f *fakeTable) List() ([]Route, error) {
	var out []Route
	for _, r := range f.routes {
		out = append(out, r)
	}
	return out, nil
}

// Apply behaves as the kernel does with Petrel's flags: an add is an
// exclusive create, a change replaces what is there.
func (f *fakeTable) Apply(add, change, remove []Route) []error {
	var errs []error
	for _, r := range add {
		f.calls++
		_, ours := f.routes[r.Prefix]
		_, theirs := f.foreign[r.Prefix]
		switch {
		case r.Prefix == f.failFor:
			errs = append(errs, errors.New("injected failure"))
		case ours || theirs:
			errs = append(errs, ErrHeld)
		default:
			f.routes[r.Prefix] = r
			errs = append(errs, nil)
		}
	}
	for _, r := range change {
		f.calls++
		if r.Prefix == f.failFor {
			errs = append(errs, errors.New("injected failure"))
			continue
		}
		delete(f.foreign, r.Prefix)
		f.routes[r.Prefix] = r
		errs = append(errs, nil)
	}
	for _, r := range remove {
		f.calls++
		delete(f.routes, r.Prefix)
		errs = append(errs, nil)
	}
	return errs
}

// Resolve treats every next hop as on-link: the kernel's rules are checked
// by the kernel tests.
func (f *fakeTable) Resolve(nh netip.Addr) ([]netip.Addr, error) {
	f.asked = append(f.asked, nh)
	return []netip.Addr{nh}, nil
}

func (f *fakeTable) String() string {
	var lines []string
	for _, r := range f.routes {
		lines = append(lines, r.normal().String())
	}
	for p, what := range f.foreign {
		lines = append(lines, p.String()+" "+what)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func r(prefix string, nhs ...string) Route {
	out := Route{Prefix: netip.MustParsePrefix(prefix)}
	if len(nhs) == 0 {
		out.Blackhole = true
	}
	for _, nh := range nhs {
		out.NextHops = append(out.NextHops, netip.MustParseAddr(nh))
	}
	return out
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func TestSyncStates(t *testing.T) {
	f := newFake(r("10.244.9.0/24", "10.0.0.9")) // stale, from a previous run
	p := New(f, quiet)
	steps := []struct {
		name string
		want []Route
		ip   string
	}{
		{"start: own blackhole, one peer; stale removed",
			[]Route{r("10.244.1.0/24"), r("10.244.2.0/24", "10.0.0.2")},
			"10.244.2.0/24 via 10.0.0.2\nblackhole 10.244.1.0/24"},
		{"second path: ECMP",
			[]Route{r("10.244.1.0/24"), r("10.244.2.0/24", "10.0.0.3", "10.0.0.2")},
			"10.244.2.0/24 nexthop via 10.0.0.2 nexthop via 10.0.0.3\nblackhole 10.244.1.0/24"},
		{"IPv6 joins",
			[]Route{r("10.244.1.0/24"), r("10.244.2.0/24", "10.0.0.2", "10.0.0.3"), r("fd00:10:244:2::/64", "fd00::2")},
			"10.244.2.0/24 nexthop via 10.0.0.2 nexthop via 10.0.0.3\nblackhole 10.244.1.0/24\nfd00:10:244:2::/64 via fd00::2"},
		{"peer lost: its routes go",
			[]Route{r("10.244.1.0/24")},
			"blackhole 10.244.1.0/24"},
	}
	for _, s := range steps {
		if _, err := p.Sync(context.Background(), s.want); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if got := f.String(); got != s.ip {
			t.Fatalf("%s:\n got %s\nwant %s", s.name, got, s.ip)
		}
		// Idempotent: the same input again changes nothing.
		f.calls = 0
		res, err := p.Sync(context.Background(), s.want)
		if err != nil || res.Replaced+res.Removed != 0 || f.calls != 0 {
			t.Fatalf("%s: second sync changed %+v (%d calls, %v)", s.name, res, f.calls, err)
		}
	}
}

func TestSyncRejectsBadInputUntouched(t *testing.T) {
	for name, want := range map[string][]Route{
		"duplicate":       {r("10.244.2.0/24", "10.0.0.2"), r("10.244.2.0/24", "10.0.0.3")},
		"host bits":       {r("10.244.2.1/24", "10.0.0.2")},
		"family mismatch": {r("10.244.2.0/24", "fd00::2")},
		"gateway on hole": {{Prefix: netip.MustParsePrefix("10.244.2.0/24"), Blackhole: true, NextHops: []netip.Addr{netip.MustParseAddr("10.0.0.2")}}},
	} {
		f := newFake(r("10.244.1.0/24"))
		if _, err := New(f, quiet).Sync(context.Background(), want); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if f.calls != 0 || f.String() != "blackhole 10.244.1.0/24" {
			t.Errorf("%s: table touched: %s", name, f)
		}
	}
}

func TestSyncPartialFailureAppliesTheRest(t *testing.T) {
	f := newFake(r("10.244.9.0/24", "10.0.0.9"))
	f.failFor = netip.MustParsePrefix("10.244.2.0/24")
	res, err := New(f, quiet).Sync(context.Background(), []Route{r("10.244.2.0/24", "10.0.0.2"), r("10.244.3.0/24", "10.0.0.3")})
	if err == nil || !strings.Contains(err.Error(), "10.244.2.0/24") {
		t.Fatalf("error %v, want one naming the failed route", err)
	}
	if res != (Result{Replaced: 1, Removed: 1}) || f.String() != "10.244.3.0/24 via 10.0.0.3" {
		t.Fatalf("result %+v table %s: the other changes should still apply", res, f)
	}
}

func TestSyncTrustsMemoryUntilInvalidated(t *testing.T) {
	f := newFake()
	p := New(f, quiet)
	want := []Route{r("10.244.2.0/24", "10.0.0.2")}
	p.Sync(context.Background(), want)
	delete(f.routes, netip.MustParsePrefix("10.244.2.0/24")) // someone else deletes it
	if res, _ := p.Sync(context.Background(), want); res.Replaced+res.Removed != 0 {
		t.Fatalf("sync without invalidation changed %+v: it should trust its memory", res)
	}
	p.Invalidate()
	if res, _ := p.Sync(context.Background(), want); res.Replaced != 1 || f.String() != "10.244.2.0/24 via 10.0.0.2" {
		t.Fatalf("after Invalidate: %+v, table %s", res, f)
	}
}

// A prefix held by a route of another protocol is never replaced: the
// learned route waits, is reported as held, and goes in once the other
// route is gone. Removing everything (uninstall) leaves the other alone.
func TestForeignRoutesAreNeverReplaced(t *testing.T) {
	f := newFake()
	f.foreign[netip.MustParsePrefix("0.0.0.0/0")] = "via 192.168.1.1 proto static"
	f.foreign[netip.MustParsePrefix("10.244.1.5/32")] = "dev petr1234 proto petrel-pod"
	p := New(f, quiet)
	want := []Route{r("0.0.0.0/0", "10.0.0.1"), r("10.244.1.5/32", "10.0.0.2"), r("10.244.2.0/24", "10.0.0.2")}
	res, err := p.Sync(context.Background(), want)
	if err != nil || res.Held != 2 || res.Replaced != 1 {
		t.Fatalf("sync: %+v %v, want 1 installed and 2 held", res, err)
	}
	table := "0.0.0.0/0 via 192.168.1.1 proto static\n10.244.1.5/32 dev petr1234 proto petrel-pod\n10.244.2.0/24 via 10.0.0.2"
	if got := f.String(); got != table {
		t.Fatalf("table:\n%s\nwant\n%s", got, table)
	}
	if got := fmt.Sprint(p.Held()); got != "[0.0.0.0/0 10.244.1.5/32]" {
		t.Fatalf("held %s", got)
	}
	// Again: nothing changes, the foreign routes stay.
	if res, err := p.Sync(context.Background(), want); err != nil || res.Replaced+res.Removed != 0 || f.String() != table {
		t.Fatalf("second sync changed something: %+v %v\n%s", res, err, f)
	}
	// The pod's route goes (pod deleted): Petrel's route takes the prefix.
	delete(f.foreign, netip.MustParsePrefix("10.244.1.5/32"))
	if res, err := p.Sync(context.Background(), want); err != nil || res.Replaced != 1 || res.Held != 1 {
		t.Fatalf("after the pod route went: %+v %v", res, err)
	}
	// Uninstall: only Petrel's routes go.
	if _, err := p.Sync(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if got := f.String(); got != "0.0.0.0/0 via 192.168.1.1 proto static" {
		t.Fatalf("after removing everything:\n%s", got)
	}
}

// Update touches only the change set, with Sync's rules: a held prefix is
// reported and stays out, a prefix both changed and gone is refused, and
// ResolveChanged asks the kernel only about next hops the last Resolve did
// not, until Invalidate.
func TestUpdateTouchesOnlyTheChange(t *testing.T) {
	f := newFake()
	f.foreign[netip.MustParsePrefix("10.0.0.0/8")] = "static"
	p := New(f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ctx := context.Background()
	learned := []Route{r("10.244.2.0/24", "10.0.0.2"), r("10.244.3.0/24", "10.0.0.3")}
	safe, _ := p.Resolve(learned, nil)
	if _, err := p.Sync(ctx, safe); err != nil {
		t.Fatal(err)
	}
	f.asked, f.calls = nil, 0
	changed, none := p.ResolveChanged([]Route{r("10.244.2.0/24", "10.0.0.3"), r("10.244.4.0/24", "10.0.0.4"), r("10.0.0.0/8", "10.0.0.2")}, nil)
	if len(none) != 0 || fmt.Sprint(f.asked) != "[10.0.0.4]" {
		t.Fatalf("asked the kernel about %v (none %v), want only the new next hop", f.asked, none)
	}
	res, err := p.Update(ctx, changed, []netip.Prefix{netip.MustParsePrefix("10.244.3.0/24")})
	if err != nil || res.Replaced != 2 || res.Removed != 1 || res.Held != 1 || res.Installed != 2 {
		t.Fatalf("update: %+v %v", res, err)
	}
	if want := "10.0.0.0/8 static\n10.244.2.0/24 via 10.0.0.3\n10.244.4.0/24 via 10.0.0.4"; f.String() != want || !slices.Equal(p.Held(), []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}) {
		t.Fatalf("table:\n%s\nheld %v", f, p.Held())
	}
	if _, err := p.Update(ctx, []Route{r("10.244.4.0/24", "10.0.0.2")}, []netip.Prefix{netip.MustParsePrefix("10.244.4.0/24")}); err == nil {
		t.Fatal("a prefix both changed and gone was accepted")
	}
	p.Invalidate()
	f.asked = nil
	p.ResolveChanged([]Route{r("10.244.2.0/24", "10.0.0.3")}, nil)
	if fmt.Sprint(f.asked) != "[10.0.0.3]" {
		t.Fatalf("after Invalidate asked about %v, want [10.0.0.3]", f.asked)
	}
}
