package route_test

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/petrelnet/petrel/internal/rtproto"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/route"
)

func rt(prefix string, nhs ...string) route.Route {
	out := route.Route{Prefix: netip.MustParsePrefix(prefix), Blackhole: len(nhs) == 0}
	for _, nh := range nhs {
		out.NextHops = append(out.NextHops, netip.MustParseAddr(nh))
	}
	return out
}

// routerNS is a namespace with an uplink whose subnet holds the next hops,
// and one route of another protocol that Petrel must never touch.
func routerNS(t *testing.T) (netnstest.NS, *route.Kernel) {
	netnstest.RequireRoot(t)
	n := netnstest.New(t, "fib")
	for _, args := range [][]string{
		{"link", "add", "up0", "type", "veth", "peer", "name", "up0p"},
		{"addr", "add", "10.0.0.1/24", "dev", "up0"},
		{"addr", "add", "fd00::1/64", "dev", "up0", "nodad"},
		{"link", "set", "up0", "up"},
		{"link", "set", "up0p", "up"},
		{"route", "add", "192.0.2.0/24", "via", "10.0.0.9", "proto", "static"},
	} {
		if out, err := n.Run("ip", args...); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	h, err := netns.GetFromName(n.Name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	k, err := route.OpenKernel(h, rtproto.BGP)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return n, k
}

// ipRoutes is the namespace's table in the kernel's own words.
func ipRoutes(t *testing.T, n netnstest.NS) string {
	t.Helper()
	var all []string
	for _, fam := range []string{"-4", "-6"} {
		out, err := n.Run("ip", fam, "route", "show", "proto", "61")
		if err != nil {
			t.Fatalf("ip route: %v %s", err, out)
		}
		for l := range strings.Lines(out) {
			all = append(all, strings.Join(strings.Fields(l), " "))
		}
	}
	return strings.Join(all, "\n")
}

func TestKernelSync(t *testing.T) {
	n, k := routerNS(t)
	p := route.New(k, slog.New(slog.NewTextHandler(io.Discard, nil)))
	want := []route.Route{
		rt("10.244.1.0/24"),
		rt("10.244.2.0/24", "10.0.0.2", "10.0.0.3"),
		rt("10.244.3.0/24", "10.0.0.3"),
		rt("fd00:10:244:1::/64"),
		rt("fd00:10:244:2::/64", "fd00::2", "fd00::3"),
	}
	ctx := context.Background()
	if _, err := p.Sync(ctx, want); err != nil {
		t.Fatal(err)
	}
	expect := strings.Join([]string{
		"blackhole 10.244.1.0/24",
		"10.244.2.0/24",
		"nexthop via 10.0.0.2 dev up0 weight 1",
		"nexthop via 10.0.0.3 dev up0 weight 1",
		"10.244.3.0/24 via 10.0.0.3 dev up0",
		"blackhole fd00:10:244:1::/64 dev lo metric 1024 pref medium",
		"fd00:10:244:2::/64 metric 1024 pref medium",
		"nexthop via fd00::2 dev up0 weight 1",
		"nexthop via fd00::3 dev up0 weight 1",
	}, "\n")
	if got := ipRoutes(t, n); got != expect {
		t.Fatalf("kernel table:\n%s\nwant:\n%s", got, expect)
	}
	if res, err := p.Sync(ctx, want); err != nil || res.Replaced+res.Removed != 0 {
		t.Fatalf("second sync changed %+v (%v)", res, err)
	}

	// Someone deletes a route: the watch pokes, a sync puts it back.
	pokes := make(chan struct{}, 1)
	nsh, _ := netns.GetFromName(n.Name)
	defer nsh.Close()
	stop, err := route.Watch(nsh, rtproto.BGP, func(stale bool) {
		if stale {
			p.Invalidate() // as the agent does: the kernel changed under us
		}
		select {
		case pokes <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if out, err := n.Run("ip", "route", "del", "10.244.3.0/24"); err != nil {
		t.Fatalf("foreign delete: %v %s", err, out)
	}
	select {
	case <-pokes:
	case <-time.After(5 * time.Second):
		t.Fatal("no poke after a foreign delete of a Petrel route")
	}
	if res, err := p.Sync(ctx, want); err != nil || res.Replaced != 1 {
		t.Fatalf("repair sync: %+v %v, want one route replaced", res, err)
	}
	if got := ipRoutes(t, n); got != expect {
		t.Fatalf("after repair:\n%s", got)
	}

	// Everything withdrawn: Petrel's routes go, the foreign one stays.
	if _, err := p.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := ipRoutes(t, n); got != "" {
		t.Fatalf("routes left after an empty sync: %s", got)
	}
	if out, _ := n.Run("ip", "route", "show", "192.0.2.0/24"); !strings.Contains(out, "via 10.0.0.9") {
		t.Fatalf("foreign route touched: %q", out)
	}
}

// One bad route in a batch fails alone, named, and the rest are installed.
func TestKernelBatchPartialFailure(t *testing.T) {
	n, k := routerNS(t)
	p := route.New(k, slog.New(slog.NewTextHandler(io.Discard, nil)))
	var want []route.Route
	for i := range 1500 { // three batches
		v := uint32(10<<24|250<<16) + uint32(i)<<6
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		want = append(want, rt(netip.PrefixFrom(a, 26).String(), "10.0.0.2"))
	}
	want[700] = rt("10.249.0.0/24", "10.5.5.5") // next hop not on any link
	res, err := p.Sync(context.Background(), want)
	if err == nil || !strings.Contains(err.Error(), "10.249.0.0/24") || res.Replaced != 1499 {
		t.Fatalf("sync: %+v %v, want 1499 installed and an error naming 10.249.0.0/24", res, err)
	}
	out, _ := n.Run("ip", "route", "show", "proto", "61")
	if got := strings.Count(out, "\n"); got != 1499 {
		t.Fatalf("kernel holds %d Petrel routes, want 1499", got)
	}
	if res, err := p.Sync(context.Background(), nil); err != nil || res.Removed != 1499 {
		t.Fatalf("removing all: %+v %v", res, err)
	}
}

// BenchmarkKernelSync installs and removes 10,000 /26 routes per iteration
// in a namespace: the cost of the kernel side of a large BGP update.
func BenchmarkKernelSync(b *testing.B) {
	netnstest.RequireRoot(b)
	n := netnstest.New(b, "fibbench")
	for _, args := range [][]string{
		{"link", "add", "up0", "type", "veth", "peer", "name", "up0p"},
		{"addr", "add", "10.0.0.1/24", "dev", "up0"},
		{"link", "set", "up0", "up"}, {"link", "set", "up0p", "up"},
	} {
		if out, err := n.Run("ip", args...); err != nil {
			b.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	h, _ := netns.GetFromName(n.Name)
	defer h.Close()
	k, err := route.OpenKernel(h, rtproto.BGP)
	if err != nil {
		b.Fatal(err)
	}
	defer k.Close()
	p := route.New(k, slog.New(slog.NewTextHandler(io.Discard, nil)))
	want := make([]route.Route, 10000)
	for i := range want {
		v := uint32(10<<24|128<<16) + uint32(i)<<6
		want[i] = route.Route{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 26),
			NextHops: []netip.Addr{netip.MustParseAddr("10.0.0.2")}}
	}
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		if res, err := p.Sync(ctx, want); err != nil || res.Replaced != len(want) {
			b.Fatalf("install: %+v %v", res, err)
		}
		if res, err := p.Sync(ctx, nil); err != nil || res.Removed != len(want) {
			b.Fatalf("remove: %+v %v", res, err)
		}
	}
}

// TestForeignRoutesStayInTheKernel: learned routes for prefixes that routes
// of other protocols hold — the node's static default, an administrator's
// route, the CNI plugin's per-pod /32 (protocol 62), an IPv6 static — are
// not installed and never replace them; one goes in when its prefix is
// freed; removing everything leaves the others in place.
func TestForeignRoutesStayInTheKernel(t *testing.T) {
	n, k := routerNS(t)
	for _, args := range [][]string{
		{"route", "add", "default", "via", "10.0.0.9", "proto", "static"},
		{"route", "add", "10.244.1.5/32", "dev", "up0", "proto", "62"},
		{"-6", "route", "add", "fd00:99::/64", "via", "fd00::9", "proto", "static"},
	} {
		if out, err := n.Run("ip", args...); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	foreign := func() string {
		var out []string
		for _, fam := range []string{"-4", "-6"} {
			o, _ := n.Run("ip", fam, "route", "show", "table", "main")
			for l := range strings.Lines(o) {
				if !strings.Contains(l, "proto 61") && !strings.Contains(l, "proto kernel") && !strings.HasPrefix(l, "fe80") && !strings.HasPrefix(l, "multicast") {
					out = append(out, strings.Join(strings.Fields(l), " "))
				}
			}
		}
		return strings.Join(out, "\n")
	}
	before := foreign()
	p := route.New(k, slog.New(slog.NewTextHandler(io.Discard, nil)))
	want := []route.Route{rt("0.0.0.0/0", "10.0.0.2"), rt("192.0.2.0/24", "10.0.0.2"), rt("10.244.1.5/32", "10.0.0.2"),
		rt("fd00:99::/64", "fd00::2"), rt("10.244.2.0/24", "10.0.0.2")}
	ctx := context.Background()
	for range 2 {
		res, err := p.Sync(ctx, want)
		if err != nil || res.Held != 4 {
			t.Fatalf("sync: %+v %v, want 4 held", res, err)
		}
		if got := foreign(); got != before {
			t.Fatalf("foreign routes changed:\n%s\nwas\n%s", got, before)
		}
		if got := ipRoutes(t, n); got != "10.244.2.0/24 via 10.0.0.2 dev up0" {
			t.Fatalf("Petrel's routes:\n%s", got)
		}
	}
	// The administrator removes the static 192.0.2.0/24: the watch pokes
	// (not stale) and the next sync installs Petrel's.
	nsh, _ := netns.GetFromName(n.Name)
	defer nsh.Close()
	pokes := make(chan bool, 16)
	stop, err := route.Watch(nsh, rtproto.BGP, func(stale bool) { pokes <- stale })
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if out, err := n.Run("ip", "route", "del", "192.0.2.0/24", "proto", "static"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	select {
	case stale := <-pokes:
		if stale {
			t.Fatal("a foreign delete was reported as stale memory")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no poke after a foreign route went away")
	}
	if res, err := p.Sync(ctx, want); err != nil || res.Replaced != 1 || res.Held != 3 {
		t.Fatalf("after the prefix was freed: %+v %v", res, err)
	}
	if got := ipRoutes(t, n); got != "10.244.2.0/24 via 10.0.0.2 dev up0\n192.0.2.0/24 via 10.0.0.2 dev up0" {
		t.Fatalf("Petrel's routes:\n%s", got)
	}
	// Uninstall: Petrel's routes go, the static default and the pod route stay.
	if _, err := p.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := ipRoutes(t, n); got != "" {
		t.Fatalf("left: %s", got)
	}
	for _, want := range []string{"default via 10.0.0.9 dev up0 proto static", "10.244.1.5 dev up0 proto 62 scope link", "fd00:99::/64 via fd00::9 dev up0 proto static"} {
		if !strings.Contains(foreign(), want) {
			t.Fatalf("%q gone after uninstall:\n%s", want, foreign())
		}
	}
}

// TestNextHopsAreValidated: a peer's next hops are installed only when the
// kernel reaches them through a route Petrel does not own and they are
// neither this node's addresses nor inside the cluster's pod CIDRs; one
// behind a router is installed via that router. A route keeps its good
// next hops when others are refused.
func TestNextHopsAreValidated(t *testing.T) {
	n, k := routerNS(t)
	for _, args := range [][]string{
		{"route", "add", "10.5.0.0/16", "via", "10.0.0.254", "proto", "static"},
		{"route", "add", "blackhole", "198.51.100.0/24"},
	} {
		if out, err := n.Run("ip", args...); err != nil {
			t.Fatalf("ip %v: %v %s", args, err, out)
		}
	}
	p := route.New(k, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if _, err := p.Sync(context.Background(), []route.Route{rt("172.16.0.0/16", "10.0.0.2")}); err != nil {
		t.Fatal(err)
	}
	forbidden := []netip.Prefix{netip.MustParsePrefix("10.244.0.0/16"), netip.MustParsePrefix("fd00:10:244::/48")}
	learned := []route.Route{
		rt("10.244.2.0/24", "10.0.0.2"),             // on-link
		rt("10.244.3.0/24", "10.0.0.1"),             // this node's own address
		rt("10.244.4.0/24", "10.244.1.2"),           // a pod
		rt("10.244.5.0/24", "10.5.3.3"),             // behind the static route: via its gateway
		rt("10.244.6.0/24", "172.16.1.1"),           // only through Petrel's own route
		rt("10.244.7.0/24", "203.0.113.1"),          // no route at all
		rt("10.244.8.0/24", "198.51.100.1"),         // a blackhole
		rt("10.244.9.0/24", "10.0.0.2", "10.0.0.1"), // ECMP: the good half stays
		rt("fd00:10:244:2::/64", "fd00::2"),
		rt("fd00:10:244:3::/64", "fd00::1"),
	}
	got, rejected := p.Resolve(learned, forbidden)
	var lines []string
	for _, r := range got {
		lines = append(lines, r.String())
	}
	want := []string{"10.244.2.0/24 via 10.0.0.2", "10.244.5.0/24 via 10.0.0.254", "10.244.9.0/24 via 10.0.0.2", "fd00:10:244:2::/64 via fd00::2"}
	if !slices.Equal(lines, want) {
		t.Fatalf("installed:\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
	var refused []string
	for _, r := range rejected {
		refused = append(refused, r.NextHop.String())
	}
	if want := "10.0.0.1 10.244.1.2 172.16.1.1 198.51.100.1 203.0.113.1 fd00::1"; strings.Join(refused, " ") != want {
		t.Fatalf("refused %v, want %s", rejected, want)
	}
	if _, err := p.Sync(context.Background(), got); err != nil {
		t.Fatalf("the resolved routes do not install: %v", err)
	}
}
