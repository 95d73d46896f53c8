package agent

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/petrelnet/petrel/bgp"
	"github.com/petrelnet/petrel/policy"
)

// Snapshot is everything the loop reads from its source at one sync: plain
// values, no API types. The loop turns it into routes, the CNI config,
// nftables and BGP, in that order.
type Snapshot struct {
	// BGP is the speaker's settings: the node's pod CIDRs, AS, router ID,
	// route reflector role. A change of the global settings restarts the
	// speaker.
	BGP bgp.Config
	// Peers are every session this node should have.
	Peers []bgp.Peer
	// Communities tag this node's announcements.
	Communities []uint32
	// Namespaces, Pods and Policies are the NetworkPolicy input; the loop
	// adds this node's pods that the source does not know yet (from the
	// IPAM store) and the masquerade settings.
	Namespaces []policy.Namespace
	Pods       []policy.Pod
	Policies   []policy.Policy
	// NodeGone: this node's Node object was deleted. Its pod CIDRs may go
	// to another node: they are withdrawn, everything else stays.
	NodeGone bool
	// Services are the Service addresses this node announces now;
	// ServiceScope is where any node may announce them (the guard).
	Services, ServiceScope []netip.Prefix
	// Drain takes the node out of service: every announcement is marked
	// GRACEFUL_SHUTDOWN at once, the Service addresses are withdrawn after
	// DrainDelay; the pod CIDRs stay (only this node reaches its pods).
	Drain      bool
	DrainDelay time.Duration
}

// Status is what the loop tells its source after each sync.
type Status struct {
	// Ready: the datapath (routes, CNI config, policy) was complete once
	// and the pod CIDRs are announced.
	Ready bool
	// Sessions is each peer's session state ("established", "idle", ...).
	Sessions map[netip.Addr]string
	// HeldRoutes are learned prefixes not installed because a route Petrel
	// does not own holds them.
	HeldRoutes []netip.Prefix
	// RefusedPolicies are the NetworkPolicies the kernel refused; their
	// pods are isolated with nothing allowed.
	RefusedPolicies []policy.Refusal
}

// Source is where the desired state comes from: the Kubernetes API
// (agent/kube) or the configuration file and a policy directory
// (agent/standalone).
type Source interface {
	// Start begins watching. poke must be called, without blocking, when
	// anything changed; Start returns once a first Snapshot can be taken.
	Start(ctx context.Context, poke func()) error
	// Snapshot is the desired state now. With an error, the snapshot is
	// still the best the source has (the last valid version of what it
	// could not read) and is applied; the sync is retried. An error that
	// wraps ErrStop ends the agent.
	Snapshot(ctx context.Context) (Snapshot, error)
	// Report hears the outcome of each sync.
	Report(ctx context.Context, st Status) error
}

// ErrStop, wrapped in an error of Source.Snapshot, ends the agent: its
// identity changed (the Node was given other pod CIDRs) and a restart
// takes the new one. Everything stays in place, as on any exit.
var ErrStop = errors.New("the agent must restart")
