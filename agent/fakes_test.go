package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	"github.com/petrelnet/petrel/bgp"
	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/policy"
	"github.com/petrelnet/petrel/route"
)

// The fakes below stand in for the kernel, nftables, GoBGP and the CNI
// config directory. Each records what it holds, in the kernel's own
// language where there is one, and appends every change it makes to a
// shared journal, so that a test sees the order of the loop's steps and
// whether a second sync changed anything.

type journal []string

func (j *journal) add(format string, args ...any) { *j = append(*j, fmt.Sprintf(format, args...)) }

// take returns the entries since the last take.
func (j *journal) take() []string {
	out := *j
	*j = nil
	return out
}

type fakeSpeaker struct {
	j        *journal
	cfg      bgp.Config
	peers    []bgp.Peer
	adverts  bgp.Adverts
	learned  []bgp.Route
	taken    map[netip.Prefix]bgp.Route // learned as of the last Routes or Changes
	stopped  bool
	tampered bool // the test changed GoBGP behind the agent's back
}

func (s *fakeSpeaker) Set(_ context.Context, peers []bgp.Peer, a bgp.Adverts) (bgp.Changes, error) {
	var c bgp.Changes
	if !slices.EqualFunc(peers, s.peers, func(x, y bgp.Peer) bool { return x.Address == y.Address && x.ASN == y.ASN }) {
		s.j.add("bgp peers %s", peerList(peers))
		c.PeersAdded = len(peers)
	}
	if !slices.Equal(a.Prefixes, s.adverts.Prefixes) || !slices.Equal(a.Communities, s.adverts.Communities) ||
		!slices.Equal(a.Services, s.adverts.Services) || !slices.Equal(a.ServiceScope, s.adverts.ServiceScope) || a.Drain != s.adverts.Drain {
		line := fmt.Sprintf("bgp announce %v communities %v", a.Prefixes, a.Communities)
		if len(a.Services)+len(a.ServiceScope) > 0 || a.Drain {
			line += fmt.Sprintf(" services %v in %v drain %v", a.Services, a.ServiceScope, a.Drain)
		}
		s.j.add("%s", line)
		c.PathsAdded = len(a.Prefixes)
	}
	s.peers, s.adverts = slices.Clone(peers), a
	return c, nil
}

func (s *fakeSpeaker) RouteCount() int { return len(s.learned) }

func (s *fakeSpeaker) EachRoute(f func(bgp.Route)) {
	s.Changes()
	for _, r := range s.learned {
		f(r)
	}
}

// Changes compares learned with what the last call saw.
func (s *fakeSpeaker) Changes() (changed []bgp.Route, gone []netip.Prefix) {
	now := map[netip.Prefix]bgp.Route{}
	for _, r := range s.learned {
		now[r.Prefix] = r
		if old, ok := s.taken[r.Prefix]; !ok || !slices.Equal(old.NextHops, r.NextHops) {
			changed = append(changed, r)
		}
	}
	for p := range s.taken {
		if _, ok := now[p]; !ok {
			gone = append(gone, p)
		}
	}
	s.taken = now
	return changed, gone
}

// Reconcile finds what the test took away behind the speaker's back.
func (s *fakeSpeaker) Reconcile(context.Context) ([]string, error) {
	if s.tampered {
		s.tampered, s.peers = false, nil
		s.j.add("bgp reconcile: peers changed behind the agent's back")
		return []string{"peers"}, nil
	}
	return nil, nil
}

func (s *fakeSpeaker) PeerStates() map[netip.Addr]string {
	out := map[netip.Addr]string{}
	for _, p := range s.peers {
		out[p.Address] = "established"
	}
	return out
}

func (s *fakeSpeaker) Stop() { s.stopped = true; s.j.add("bgp stop asn %d", s.cfg.ASN) }

func peerList(ps []bgp.Peer) string {
	var out []string
	for _, p := range ps {
		out = append(out, fmt.Sprintf("%s/%d", p.Address, p.ASN))
	}
	return "[" + strings.Join(out, " ") + "]"
}

// fakeBGP makes speakers; it refuses to start one with refuseASN.
type fakeBGP struct {
	j         *journal
	refuseASN uint32
	learned   []bgp.Route // what every new speaker learns
	speakers  []*fakeSpeaker
}

func (f *fakeBGP) new(_ context.Context, c bgp.Config, _ bgp.Notify) (Speaker, error) {
	if c.ASN == f.refuseASN {
		f.j.add("bgp start asn %d refused", c.ASN)
		return nil, fmt.Errorf("start bgp: asn %d refused", c.ASN)
	}
	f.j.add("bgp start asn %d", c.ASN)
	s := &fakeSpeaker{j: f.j, cfg: c, learned: f.learned}
	f.speakers = append(f.speakers, s)
	return s, nil
}

func (f *fakeBGP) current() *fakeSpeaker { return f.speakers[len(f.speakers)-1] }

// fakeRoutes is a routing table that prints itself as `ip route` does.
type fakeRoutes struct {
	j           *journal
	table       map[netip.Prefix]route.Route
	invalidated int
}

func (r *fakeRoutes) Sync(_ context.Context, want []route.Route) (route.Result, error) {
	replace, remove := route.Diff(r.list(), want)
	for _, x := range replace {
		r.table[x.Prefix] = x
		r.j.add("route replace %s", x)
	}
	for _, x := range remove {
		delete(r.table, x.Prefix)
		r.j.add("route delete %s", x)
	}
	return route.Result{Replaced: len(replace), Removed: len(remove), Installed: len(r.table)}, nil
}

func (r *fakeRoutes) SyncKeeping(_ context.Context, want []route.Route) (route.Result, error) {
	replace, _ := route.Diff(r.list(), want)
	for _, x := range replace {
		r.table[x.Prefix] = x
		r.j.add("route replace %s", x)
	}
	return route.Result{Replaced: len(replace), Installed: len(r.table)}, nil
}

func (r *fakeRoutes) Update(_ context.Context, changed []route.Route, gone []netip.Prefix) (route.Result, error) {
	var res route.Result
	for _, x := range changed {
		if cur, ok := r.table[x.Prefix]; !ok || cur.String() != x.String() {
			r.table[x.Prefix] = x
			r.j.add("route replace %s", x)
			res.Replaced++
		}
	}
	for _, p := range gone {
		if x, ok := r.table[p]; ok {
			delete(r.table, p)
			r.j.add("route delete %s", x)
			res.Removed++
		}
	}
	res.Installed = len(r.table)
	return res, nil
}

func (r *fakeRoutes) ResolveChanged(learned []route.Route, forbidden []netip.Prefix) ([]route.Route, []netip.Prefix) {
	out, _ := r.Resolve(learned, forbidden)
	var none []netip.Prefix
	for _, x := range learned {
		if !slices.ContainsFunc(out, func(o route.Route) bool { return o.Prefix == x.Prefix }) {
			none = append(none, x.Prefix)
		}
	}
	return out, none
}

func (r *fakeRoutes) Invalidate() { r.invalidated++ }

func (r *fakeRoutes) Held() []netip.Prefix { return nil }

// Resolve refuses next hops inside forbidden, like the kernel's programmer;
// everything else counts as on-link.
func (r *fakeRoutes) Resolve(learned []route.Route, forbidden []netip.Prefix) ([]route.Route, []route.Rejected) {
	var out []route.Route
	var rejected []route.Rejected
	for _, x := range learned {
		var nhs []netip.Addr
		for _, nh := range x.NextHops {
			if slices.ContainsFunc(forbidden, func(p netip.Prefix) bool { return p.Contains(nh) }) {
				rejected = append(rejected, route.Rejected{NextHop: nh, Reason: "inside the pod CIDRs"})
				continue
			}
			nhs = append(nhs, nh)
		}
		if len(nhs) > 0 {
			x.NextHops = nhs
			out = append(out, x)
		}
	}
	return out, rejected
}

func (r *fakeRoutes) list() []route.Route {
	var out []route.Route
	for _, x := range r.table {
		out = append(out, x)
	}
	return out
}

// String is the table as `ip route show proto 61` lists it.
func (r *fakeRoutes) String() string {
	var lines []string
	for _, x := range r.table {
		lines = append(lines, x.String())
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

type fakeFirewall struct {
	j           *journal
	last        *policy.Desired
	lastIn      *policy.Input
	invalidated bool
	fail        error
	refuse      map[string]bool // "namespace/name": reported as refused by the kernel
}

func (f *fakeFirewall) Sync(in policy.Input) ([]policy.Refusal, error) {
	if f.fail != nil {
		f.j.add("nftables refused")
		f.lastIn = nil
		return nil, f.fail
	}
	if f.lastIn != nil && !f.invalidated && reflect.DeepEqual(in, *f.lastIn) {
		return nil, nil // as the real one: an unchanged input costs nothing
	}
	f.lastIn = &in
	d := policy.Compile(in)
	var refused []policy.Refusal
	for _, p := range in.Policies {
		if f.refuse[p.Namespace+"/"+p.Name] {
			refused = append(refused, policy.Refusal{Namespace: p.Namespace, Name: p.Name, Err: errors.New("file exists")})
		}
	}
	mode := "incremental"
	if f.invalidated || f.last == nil {
		mode = "replace"
	}
	f.j.add("nftables %s: %d sets, %d ingress, %d egress", mode, len(d.Sets), len(d.Ingress), len(d.Egress))
	f.last, f.invalidated = d, false
	return refused, nil
}

func (f *fakeFirewall) Invalidate() { f.invalidated = true }

type fakeCNI struct {
	j    *journal
	conf *cni.ConfList
	fail error
}

func (f *fakeCNI) Write(c cni.ConfList) (bool, error) {
	if f.fail != nil {
		f.j.add("conflist write failed")
		return false, f.fail
	}
	if f.conf != nil && slices.Equal(f.conf.Ranges, c.Ranges) && f.conf.MTU == c.MTU {
		return false, nil
	}
	f.j.add("conflist ranges %v", c.Ranges)
	f.conf = &c
	return true, nil
}

// fakeSource serves whatever snapshot the test sets.
type fakeSource struct {
	snap    Snapshot
	err     error
	reports []Status
}

func (s *fakeSource) Start(context.Context, func()) error        { return nil }
func (s *fakeSource) Snapshot(context.Context) (Snapshot, error) { return s.snap, s.err }
func (s *fakeSource) Report(_ context.Context, st Status) error {
	s.reports = append(s.reports, st)
	return nil
}
func (s *fakeSource) lastReport() Status { return s.reports[len(s.reports)-1] }

var errDisk = errors.New("no space left on device")
