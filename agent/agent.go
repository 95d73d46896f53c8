package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netns"

	"github.com/petrelnet/petrel/bgp"
	"github.com/petrelnet/petrel/bgp/fib"
	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/internal/rtproto"
	"github.com/petrelnet/petrel/internal/runner"
	"github.com/petrelnet/petrel/ipam"
	"github.com/petrelnet/petrel/policy"
)

// minSyncInterval bounds how often the loop runs under a storm of events:
// a burst of BGP updates becomes one kernel sync.
const minSyncInterval = 50 * time.Millisecond

type agent struct {
	cfg     *Config
	log     *slog.Logger
	bgpCfg  bgp.Config
	peers   []bgp.Peer
	speaker *bgp.Speaker
	fib     *fib.Programmer
	policy  *policyState
	metrics *agentMetrics
	ready   bool                        // the datapath was complete once: the pod CIDRs may be announced
	current atomic.Pointer[bgp.Speaker] // for the metrics collector
	poke    func()
	// Kubernetes mode: the cluster's part of the BGP setup (AS, mesh,
	// BGPPeers) and the policy input come from the cluster at every sync;
	// onReady marks the Node ready; onSessions hears every sync's session
	// states. All nil in standalone mode.
	cluster     func(context.Context) (clusterView, error)
	kubePolicy  func() (policy.Input, error)
	onReady     func(context.Context) error
	onSessions  func(states map[netip.Addr]string, sources map[netip.Addr]string)
	readyMarked bool
	nodeGone    bool
	baseBGP     bgp.Config // the config file's speaker settings
}

// Run runs the agent until ctx ends. On return everything stays in place:
// kernel routes, the CNI config, and (by exiting without a NOTIFICATION)
// this node's routes in its peers, held as stale under graceful restart
// until the next agent announces them again. Restarting drops no packet.
func Run(ctx context.Context, c *Config, log *slog.Logger) error {
	return run(ctx, &agent{cfg: c, log: log, metrics: newAgentMetrics()}, nil)
}

// run starts the dataplane pieces and the loop. loop may be made by the
// caller, when its event sources were started first.
func run(ctx context.Context, a *agent, loop *runner.Runner) error {
	c, log := a.cfg, a.log
	var err error
	if a.baseBGP, err = c.BGP(); err != nil {
		return err
	}
	a.bgpCfg = a.baseBGP
	if a.peers, err = c.BGPPeers(); err != nil {
		return err
	}
	kernel, err := fib.OpenKernel(netns.None(), rtproto.BGP)
	if err != nil {
		return err
	}
	a.fib = fib.New(kernel, log.With("component", "fib"))
	if loop == nil {
		loop = runner.New(minSyncInterval, time.Duration(c.ResyncInterval))
	}
	a.poke = loop.Poke
	if a.cluster != nil {
		if v, err := a.cluster(ctx); err == nil {
			a.bgpCfg = a.clusterBGP(v)
		}
	}
	if a.speaker, err = bgp.New(ctx, a.bgpCfg, log.With("component", "bgp"), loop.Poke); err != nil {
		return err
	}
	a.current.Store(a.speaker)
	if err := a.startPolicy(ctx, loop.Poke); err != nil {
		return err
	}
	a.metrics.reg.MustRegister(speakerCollector{&a.current})
	if err := a.metrics.serve(ctx, c.MetricsAddress, 3*time.Duration(c.ResyncInterval), log); err != nil {
		return fmt.Errorf("metricsAddress %s: %w", c.MetricsAddress, err)
	}
	stop, err := fib.Watch(netns.None(), rtproto.BGP, func() { a.fib.Invalidate(); loop.Poke() })
	if err != nil {
		return err
	}
	defer stop()
	log.Info("agent started", "node", c.NodeName, "asn", c.ASN, "podCIDRs", c.PodCIDRs, "peers", len(a.peers))
	loop.Run(ctx, log, a.sync)
	log.Info("agent stopped; routes, CNI config and peers' stale routes stay for the next start")
	return nil
}

// sync computes the whole desired state and applies it, datapath first:
// the pod CIDRs are announced only once their blackholes and the CNI config
// are in place.
func (a *agent) sync(ctx context.Context) error {
	var view clusterView
	var viewErr error
	if a.cluster != nil {
		view, viewErr = a.cluster(ctx)
		// A speaker that cannot take the cluster's settings keeps the old
		// ones; routes and policy are synced all the same.
		viewErr = errors.Join(viewErr, a.reconfigure(ctx, a.clusterBGP(view)))
		a.speaker.SetCommunities(view.communities)
	}
	learned, err := a.speaker.Routes()
	if err != nil {
		return err
	}
	routes := append(blackholes(a.bgpCfg.PodCIDRs), learned...)
	start := time.Now()
	_, fibErr := a.fib.Sync(ctx, routes)
	a.metrics.fibSync.Observe(time.Since(start).Seconds())
	if fibErr == nil {
		a.metrics.routesInstalled.Set(float64(len(routes)))
	}
	_, confErr := cni.WriteConfList(a.cfg.CNIConfDir, a.confList())
	polErr := a.syncPolicy()
	if fibErr == nil && confErr == nil && polErr == nil && !a.ready {
		a.ready = true
		a.log.Info("datapath ready, announcing pod CIDRs", "podCIDRs", a.cfg.PodCIDRs)
	}
	var adverts []netip.Prefix
	if a.ready && !view.nodeGone {
		adverts = a.bgpCfg.PodCIDRs
	}
	if view.nodeGone != a.nodeGone {
		a.nodeGone = view.nodeGone
		if a.nodeGone {
			a.log.Warn("this node's Node object was deleted: withdrawing its pod CIDRs (they may be given to another node)")
		} else {
			a.log.Info("this node's Node object is back: announcing its pod CIDRs")
		}
	}
	_, bgpErr := a.speaker.Set(ctx, a.allPeers(view), adverts)
	bgpErr = errors.Join(viewErr, bgpErr)
	if a.onSessions != nil {
		a.onSessions(a.speaker.PeerStates(), view.sources)
	}
	if a.ready && a.onReady != nil && !a.readyMarked {
		if err := a.onReady(ctx); err != nil {
			bgpErr = errors.Join(bgpErr, err)
		} else {
			a.readyMarked = true
		}
	}
	a.metrics.ready.Store(a.ready)
	a.metrics.lastSync.Store(time.Now().UnixNano())
	return errors.Join(fibErr, confErr, polErr, bgpErr)
}

// startPolicy opens nftables and starts watching the policy directory and
// the IPAM store (a new local pod must be classified, or isolated, at once).
func (a *agent) startPolicy(ctx context.Context, poke func()) error {
	syncer, err := policy.NewSyncer(-1, a.log.With("component", "policy"))
	if err != nil {
		return err
	}
	noMasq, _ := a.cfg.NoMasquerade() // validated at load
	a.policy = &policyState{compiler: policy.NewCompiler(), syncer: syncer, noMasq: noMasq}
	if a.cfg.PolicyDir != "" {
		a.policy.dir = newPolicyDir(a.cfg.PolicyDir, a.log.With("component", "policy"))
		go pollChanges(ctx, 500*time.Millisecond, a.policy.dir.fingerprint, poke)
	}
	go pollChanges(ctx, 200*time.Millisecond, fileStamp(filepath.Join(a.cfg.DataDir, ipam.StoreFile)), poke)
	return nil
}

// allPeers are the config file's peers plus, in Kubernetes mode, the
// cluster's; the file wins where both name an address.
func (a *agent) allPeers(v clusterView) []bgp.Peer {
	out := slices.Clone(a.peers)
	for _, p := range v.peers {
		if !slices.ContainsFunc(a.peers, func(q bgp.Peer) bool { return q.Address == p.Address }) {
			out = append(out, p)
		}
	}
	return out
}

func (a *agent) confList() cni.ConfList {
	return cni.ConfList{MTU: a.cfg.MTU, Ranges: a.bgpCfg.PodCIDRs, DataDir: a.cfg.DataDir, PortMap: *a.cfg.PortMap}
}

// blackholes keep packets for unused addresses of the node's own pod CIDRs
// from looping back to the router that sent them; the pods' /32 and /128
// routes are more specific and win.
func blackholes(pods []netip.Prefix) []fib.Route {
	out := make([]fib.Route, 0, len(pods))
	for _, p := range pods {
		out = append(out, fib.Route{Prefix: p, Blackhole: true})
	}
	return out
}

// Uninstall removes what the agent owns on this node: its kernel routes
// (protocol 61), its nftables table and the CNI config it wrote. Pods keep their attachments;
// those go with each pod's CNI DEL.
func Uninstall(c *Config, log *slog.Logger) error {
	kernel, err := fib.OpenKernel(netns.None(), rtproto.BGP)
	if err != nil {
		return err
	}
	res, err := fib.New(kernel, log).Sync(context.Background(), nil)
	if err != nil {
		return fmt.Errorf("remove routes: %w", err)
	}
	syncer, err := policy.NewSyncer(-1, log)
	if err != nil {
		return err
	}
	if err := syncer.Remove(); err != nil {
		return fmt.Errorf("remove nftables table: %w", err)
	}
	conf := filepath.Join(c.CNIConfDir, cni.ConfListFile)
	if err := os.Remove(conf); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	log.Info("uninstalled", "routesRemoved", res.Removed, "removed", conf)
	return nil
}
