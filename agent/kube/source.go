package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"

	"github.com/petrelnet/petrel/agent"
	"github.com/petrelnet/petrel/agent/config"
	"github.com/petrelnet/petrel/bgp"
)

// Source is the agent's Source in Kubernetes mode: this node's identity,
// its node-mesh and BGPPeer sessions and the NetworkPolicy input come from
// the cluster. An API server outage leaves the dataplane as it is; the
// informers reconnect and resync.
type Source struct {
	cfg      config.Config // the file's, with this node's values from the cluster
	log      *slog.Logger
	c        *client
	nodeName string

	k           *kubeSource
	rep         *reporter
	fileASN     uint32         // the config file's asn, zero when absent
	base        bgp.Config     // the file's speaker settings for this node
	filePeers   []bgp.Peer     // the config file's peers
	cidrs       []netip.Prefix // this node's pod CIDRs at start
	last        clusterView    // the view of the last Snapshot
	readyMarked bool
}

var _ agent.Source = (*Source)(nil)

// NewSource connects to the API server; nodeName is this node's Node (from
// the downward API). Nothing is read before Start.
func NewSource(c *config.Config, restCfg *rest.Config, nodeName string, log *slog.Logger) (*Source, error) {
	if nodeName == "" {
		return nil, fmt.Errorf("NODE_NAME: required in Kubernetes mode (from the downward API)")
	}
	kc, err := newClient(restCfg)
	if err != nil {
		return nil, err
	}
	// client-go's own messages (reconnects, watch errors) in the agent's log.
	klog.SetSlogLogger(log.With("library", "client-go"))
	return &Source{cfg: *c, log: log, c: kc, nodeName: nodeName, fileASN: c.ASN}, nil
}

// Start checks access, runs the informers, and waits until this node's
// Node has spec.podCIDRs and an InternalIP.
func (s *Source) Start(ctx context.Context, poke func()) error {
	if err := waitForAccess(ctx, s.c.dyn, Namespace(), s.log); err != nil {
		return err
	}
	s.k = newKubeSource(s.c, s.nodeName, Namespace(), poke)
	if err := s.k.start(ctx); err != nil {
		return err
	}
	var ip netip.Addr
	for logged := false; ; {
		var ok bool
		if s.cidrs, ip, ok = s.k.thisNode(); ok {
			break
		}
		if !logged {
			s.log.Info("waiting for this node's spec.podCIDRs and InternalIP")
			logged = true
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	c := &s.cfg
	c.NodeName, c.RouterID, c.PodCIDRs = s.nodeName, ip.String(), nil
	for _, p := range s.cidrs {
		c.PodCIDRs = append(c.PodCIDRs, p.String())
	}
	if c.ASN == 0 {
		c.ASN = config.DefaultASN // replaced by the cluster's at the first sync
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("config with this node's values from the cluster: %w", err)
	}
	s.base, _ = c.BGP()           // validated
	s.filePeers, _ = c.BGPPeers() // validated
	node, err := s.k.nodes.Get(s.nodeName)
	if err != nil {
		return err
	}
	var stopEvents func()
	s.rep, stopEvents = newReporter(s.c, s.nodeName)
	s.rep.node.UID = node.UID
	go func() { <-ctx.Done(); stopEvents() }()
	lb := &lbController{c: s.c, k: s.k, events: s.rep.events, log: s.log}
	go runLBElection(ctx, lb, s.nodeName, Namespace())
	return nil
}

// Snapshot is the cluster's view for this node. When the Node was given
// other pod CIDRs it returns agent.ErrStop: the agent restarts with them.
func (s *Source) Snapshot(ctx context.Context) (agent.Snapshot, error) {
	v, err := s.k.view(s.fileASN)
	if len(v.podCIDRs) > 0 && !slices.Equal(v.podCIDRs, s.cidrs) {
		return agent.Snapshot{}, fmt.Errorf("%w: this node's spec.podCIDRs changed to %v, was %v", agent.ErrStop, v.podCIDRs, s.cidrs)
	}
	s.last = v
	snap := agent.Snapshot{BGP: s.clusterBGP(v), Peers: s.allPeers(v), Communities: v.communities, NodeGone: v.nodeGone,
		Services: v.services.mine, ServiceScope: v.services.scope, Drain: v.drain, DrainDelay: v.drainDelay}
	in, perr := s.k.policyInput()
	if perr != nil {
		s.log.Warn("some NetworkPolicies are not applied", "err", perr)
	}
	snap.Namespaces, snap.Pods, snap.Policies = in.Namespaces, in.Pods, in.Policies
	return snap, err
}

// Report writes the verdicts on Petrel's objects, session Events, and the
// Node's NetworkUnavailable=False once the datapath is ready.
func (s *Source) Report(ctx context.Context, st agent.Status) error {
	err := s.rep.report(ctx, s.last.verdicts)
	s.rep.sessionEvents(st.Sessions, s.last.sources)
	s.rep.heldRoutes(st.HeldRoutes)
	s.rep.refusedPolicies(st.RefusedPolicies, s.k.policyUID)
	if st.Ready && !s.readyMarked {
		if e := markNetworkAvailable(ctx, s.c, s.nodeName); e != nil {
			return errors.Join(err, e)
		}
		s.readyMarked = true
	}
	return err
}

// clusterBGP is the config file's speaker settings with the cluster's AS
// and route reflector role.
func (s *Source) clusterBGP(v clusterView) bgp.Config {
	c := s.base
	c.ASN = v.asn
	c.RouteReflector = c.RouteReflector || v.routeReflector
	c.ClusterID = v.clusterID
	return c
}

// allPeers are the config file's peers plus the cluster's; the file wins
// where both name an address.
func (s *Source) allPeers(v clusterView) []bgp.Peer {
	out := slices.Clone(s.filePeers)
	for _, p := range v.peers {
		if !slices.ContainsFunc(s.filePeers, func(q bgp.Peer) bool { return q.Address == p.Address }) {
			out = append(out, p)
		}
	}
	return out
}
