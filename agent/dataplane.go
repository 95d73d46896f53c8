package agent

import (
	"context"
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrelnet/petrel/bgp"
	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/ipam"
	"github.com/petrelnet/petrel/policy"
	"github.com/petrelnet/petrel/route"
)

// The loop drives the node's dataplane through these small interfaces. The
// kernel implementations are wired by KernelDataplane; the loop's tests
// use in-memory fakes.

// Speaker is the embedded BGP speaker (*bgp.Speaker).
type Speaker interface {
	// Set makes the speaker peer with exactly peers and originate exactly
	// adverts; idempotent.
	Set(ctx context.Context, peers []bgp.Peer, adverts bgp.Adverts) (bgp.Changes, error)
	// EachRoute calls f with each best route learned from peers (the
	// speaker waits meanwhile); Changes reports only what changes after
	// this call. RouteCount is how many there are, at most.
	EachRoute(f func(bgp.Route))
	RouteCount() int
	// Changes are the learned routes that changed since the last Changes
	// or Routes, and the prefixes that no longer have one.
	Changes() (changed []bgp.Route, gone []netip.Prefix)
	// PeerStates is each configured peer's session state.
	PeerStates() map[netip.Addr]string
	// Stop closes every session: the speaker is being replaced.
	Stop()
	// Reconcile reads the speaker's actual peers, policies and
	// announcements and undoes or marks what changed behind its back, for
	// the next Set to repair. It runs at the periodic resync.
	Reconcile(ctx context.Context) ([]string, error)
}

// NewSpeaker starts a speaker with the given settings; notify says when
// its learned routes or its sessions change.
type NewSpeaker func(ctx context.Context, cfg bgp.Config, notify bgp.Notify) (Speaker, error)

// RouteTable holds Petrel's kernel routes (*route.Programmer).
type RouteTable interface {
	// Sync makes the table hold exactly want; idempotent.
	Sync(ctx context.Context, want []route.Route) (route.Result, error)
	// SyncKeeping is Sync that removes nothing.
	SyncKeeping(ctx context.Context, want []route.Route) (route.Result, error)
	// Update installs changed and removes the routes of gone, touching
	// nothing else: Sync for a change set.
	Update(ctx context.Context, changed []route.Route, gone []netip.Prefix) (route.Result, error)
	// Invalidate makes the next Sync read the kernel instead of trusting
	// what it installed.
	Invalidate()
	// Held are the wanted prefixes that routes Petrel does not own keep
	// out of the table (they are never replaced).
	Held() []netip.Prefix
	// Resolve keeps the learned next hops that are safe to install (not
	// local, not inside forbidden, reached through a route Petrel does not
	// own), each replaced by the gateway the kernel reaches it through.
	// What it returns is written over learned's array.
	Resolve(learned []route.Route, forbidden []netip.Prefix) ([]route.Route, []route.Rejected)
	// ResolveChanged is Resolve for a change set: the routes that keep a
	// next hop, and the prefixes of those left with none.
	ResolveChanged(learned []route.Route, forbidden []netip.Prefix) ([]route.Route, []netip.Prefix)
}

// Firewall is Petrel's nftables table (*policy.Firewall): it compiles the
// input, decides itself whether a sync replaces the table or changes only
// what differs, and fails closed per policy.
type Firewall interface {
	// Sync applies in; the policies the kernel refused are applied as
	// isolation only and returned. An error: no table could be applied.
	Sync(in policy.Input) ([]policy.Refusal, error)
	// Invalidate makes the next Sync replace the whole table.
	Invalidate()
}

// CNIConfig writes the CNI network configuration the plugin reads.
type CNIConfig interface {
	// Write writes c unless the file already holds it; it reports whether
	// it wrote.
	Write(c cni.ConfList) (bool, error)
}

// Dataplane is the node's side of the loop.
type Dataplane struct {
	NewSpeaker NewSpeaker
	Routes     RouteTable
	Firewall   Firewall
	CNI        CNIConfig
	// Watch, if set, starts reporting changes made behind the agent's back
	// (a route deleted by hand, Petrel's nftables table or a rule of it
	// deleted): it invalidates what they concern, calls drift with the kind
	// of object when it was Petrel's, then poke. It stops with ctx.
	Watch func(ctx context.Context, poke func(), drift func(object string)) error
	// Metrics, if set, exports the speaker's own metrics.
	Metrics func(Speaker) prometheus.Collector
	// ReleaseOrphans, if set, releases the addresses of local pods whose
	// network namespace is gone although Petrel's DEL never ran, and
	// returns them. The agent calls it at every periodic resync.
	ReleaseOrphans func(now time.Time) ([]ipam.Allocation, error)
}
