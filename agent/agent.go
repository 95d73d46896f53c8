// Package agent is petrel-agent's one level-triggered loop: it takes a
// Snapshot of the desired state from a Source (the Kubernetes API or the
// configuration file) and calls each dataplane piece's idempotent Sync with
// it, datapath first: routes, CNI config and policy, then the
// announcements. It imports neither client-go nor the Kubernetes API types.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/petrelnet/petrel/agent/config"
	"github.com/petrelnet/petrel/bgp"
	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/internal/runner"
	"github.com/petrelnet/petrel/ipam"
	"github.com/petrelnet/petrel/policy"
	"github.com/petrelnet/petrel/route"
)

// minSyncInterval bounds how often the loop runs under a storm of events:
// a burst of BGP updates becomes one kernel sync.
const minSyncInterval = 50 * time.Millisecond

// fastSyncInterval spaces the programming of learned routes during a flood
// of BGP updates: GoBGP reports each path on its own, and waking the loop
// for every few of them cost more (in the update processing it competes
// with) than the kernel writes; every 2 ms installed 20,000 routes 10-20 %
// sooner than at once (routebench), and a single update waits at most that.
const fastSyncInterval = 2 * time.Millisecond

type agent struct {
	cfg     *config.Config // the file's node-independent settings
	log     *slog.Logger
	src     Source
	dp      Dataplane
	metrics *agentMetrics
	poke    func()
	// pokeRoutes asks for syncLearned alone, at once: the learned routes
	// changed, nothing else did.
	pokeRoutes func()
	stop       context.CancelCauseFunc // ends Run, with the reason

	speaker   Speaker
	bgpCfg    bgp.Config              // the running speaker's settings
	current   atomic.Pointer[Speaker] // for the metrics collector
	policy    policyState
	ready     bool          // the datapath was complete once: the pod CIDRs may be announced
	lastConf  *cni.ConfList // the CNI config last written
	nodeGone  bool
	keep      startKeep // learned routes of the previous agent, kept at start (restart.go)
	drainAt   time.Time // when the node began to drain; zero: not draining
	drainDone bool      // the drain delay is over: Service addresses withdrawn
}

func newAgent(cfg *config.Config, log *slog.Logger, src Source, dp Dataplane) *agent {
	return &agent{cfg: cfg, log: log, src: src, dp: dp, metrics: newAgentMetrics(), poke: func() {}, pokeRoutes: func() {}, stop: func(error) {}}
}

// Run runs the agent until ctx ends. On return everything stays in place:
// kernel routes, the CNI config, and (by exiting without a NOTIFICATION)
// this node's routes in its peers, held as stale under graceful restart
// until the next agent announces them again. Restarting drops no packet.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, src Source, dp Dataplane) error {
	a := newAgent(cfg, log, src, dp)
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	a.stop = stop
	a.keep.until = time.Now().Add(startKeepMax)
	loop := runner.New(minSyncInterval, time.Duration(cfg.ResyncInterval))
	loop.FastInterval = fastSyncInterval
	a.poke, a.pokeRoutes = loop.Poke, loop.PokeFast
	if dp.Metrics != nil {
		a.metrics.reg.MustRegister(speakerCollector{&a.current, dp.Metrics})
	}
	// Health first: while the source waits (an API server not reachable
	// yet), the agent is alive and says why it is not ready.
	if err := a.metrics.serve(ctx, cfg.MetricsAddress, 3*time.Duration(cfg.ResyncInterval), a.confListPresent, log); err != nil {
		return fmt.Errorf("metricsAddress %s: %w", cfg.MetricsAddress, err)
	}
	a.metrics.setReady(errors.New("starting: waiting for the source (the API server, this node's Node)"))
	if err := src.Start(ctx, loop.Poke); err != nil {
		return err
	}
	snap, err := src.Snapshot(ctx)
	if errors.Is(err, ErrStop) {
		return err
	}
	if err := a.startSpeaker(ctx, snap.BGP); err != nil {
		return err
	}
	// A new local pod must be classified, or isolated, at once.
	go runner.Poll(ctx, 200*time.Millisecond, runner.FileStamp(filepath.Join(cfg.DataDir, ipam.StoreFile)), loop.Poke)
	if dp.Watch != nil {
		if err := dp.Watch(ctx, loop.Poke, a.metrics.drift); err != nil {
			return err
		}
	}
	// The CNI config deleted or truncated by hand: rewritten at once.
	go runner.Poll(ctx, 200*time.Millisecond, runner.FileStamp(filepath.Join(cfg.CNIConfDir, cni.ConfListFile)), loop.Poke)
	log.Info("agent started", "asn", snap.BGP.ASN, "podCIDRs", snap.BGP.PodCIDRs, "peers", len(snap.Peers))
	loop.Run(ctx, log, a.sync, a.syncLearned)
	if cause := context.Cause(ctx); errors.Is(cause, ErrStop) {
		return cause
	}
	log.Info("agent stopped; routes, CNI config and peers' stale routes stay for the next start")
	return nil
}

func (a *agent) startSpeaker(ctx context.Context, c bgp.Config) error {
	sp, err := a.dp.NewSpeaker(ctx, c, bgp.Notify{Routes: a.pokeRoutes, Sessions: a.poke})
	if err != nil {
		return err
	}
	a.speaker, a.bgpCfg = sp, c
	a.current.Store(&sp)
	return nil
}

// sync computes the whole desired state and applies it, datapath first:
// the pod CIDRs are announced only once their blackholes, the CNI config
// and the policy are in place. resync is the runner's periodic full
// resync: every piece forgets what it remembers of the kernel and reads it
// again, which repairs changes nobody reported.
func (a *agent) sync(ctx context.Context, resync bool) error {
	snap, srcErr := a.src.Snapshot(ctx)
	if errors.Is(srcErr, ErrStop) {
		a.stop(srcErr)
		return srcErr
	}
	if resync {
		a.dp.Routes.Invalidate()
		a.dp.Firewall.Invalidate()
		a.releaseOrphans()
	}
	// A speaker that cannot take the new settings keeps the old ones;
	// routes and policy are synced all the same.
	bgpErr := a.reconfigure(ctx, snap.BGP)
	pods := a.bgpCfg.PodCIDRs
	routeErr := a.syncRoutes(ctx, pods, a.keeping(time.Now(), snap.Peers, a.speaker.PeerStates()))
	confErr := a.writeConf(pods)
	polErr := a.syncPolicy(snap, pods)
	if routeErr == nil && confErr == nil && polErr == nil && !a.ready {
		a.ready = true
		a.log.Info("datapath ready, announcing pod CIDRs", "podCIDRs", pods)
	}
	a.noteNodeGone(snap.NodeGone)
	var adverts bgp.Adverts
	if a.ready && !snap.NodeGone {
		adverts = bgp.Adverts{Prefixes: pods, Services: a.drainServices(snap), ServiceScope: snap.ServiceScope,
			Communities: snap.Communities, Drain: snap.Drain}
	}
	a.metrics.services.Set(float64(len(adverts.Services)))
	a.metrics.draining.Set(map[bool]float64{true: 1}[adverts.Drain])
	var recErr error
	if resync {
		_, recErr = a.speaker.Reconcile(ctx)
	}
	_, setErr := a.speaker.Set(ctx, snap.Peers, adverts)
	held := a.dp.Routes.Held()
	a.metrics.routeConflicts.Set(float64(len(held)))
	repErr := a.src.Report(ctx, Status{Ready: a.ready, Sessions: a.speaker.PeerStates(), HeldRoutes: held, RefusedPolicies: a.refusedList()})
	a.metrics.setReady(notReady(a.ready, snap.NodeGone, routeErr, confErr, polErr, setErr))
	a.metrics.lastSync.Store(time.Now().UnixNano())
	return errors.Join(srcErr, bgpErr, routeErr, confErr, polErr, recErr, setErr, repErr)
}

// releaseOrphans frees the addresses of pods that are gone without a DEL,
// before the policy reads the store: their addresses would otherwise stay
// allocated, and policed as local pods, until the pod CIDR runs out.
func (a *agent) releaseOrphans() {
	if a.dp.ReleaseOrphans == nil {
		return
	}
	freed, err := a.dp.ReleaseOrphans(time.Now())
	if err != nil {
		a.log.Warn("could not release the addresses of vanished pods; retrying at the next resync", "err", err)
		return
	}
	for _, al := range freed {
		a.log.Warn("released the address of a pod whose network namespace is gone without a CNI DEL (did a chained plugin fail DEL?)",
			"ip", al.IP, "containerID", al.ContainerID, "pod", al.PodNamespace+"/"+al.PodName)
	}
	a.metrics.orphans.Add(float64(len(freed)))
}

// syncRoutes installs the learned routes whose next hops are safe, and the
// blackholes of the node's own pod CIDRs; with keep, it removes nothing
// (restart.go).
func (a *agent) syncRoutes(ctx context.Context, pods []netip.Prefix, keep bool) error {
	// One array from the speaker's routes to the kernel's desired table:
	// at 100,000 routes every copy is another 5.6 MB, every resync.
	candidates := make([]route.Route, 0, a.speaker.RouteCount()+len(pods))
	a.speaker.EachRoute(func(r bgp.Route) {
		candidates = append(candidates, route.Route{Prefix: r.Prefix, NextHops: r.NextHops})
	})
	// No next hop may point into the cluster's pod addresses: a peer could
	// otherwise steer another node's traffic into a pod.
	forbidden := append(slices.Clone(a.bgpCfg.ClusterCIDRs), pods...)
	safe, rejected := a.dp.Routes.Resolve(candidates, forbidden)
	a.metrics.nextHopsRejected.Set(float64(len(rejected)))
	routes := append(safe, blackholes(pods)...)
	start := time.Now()
	sync := a.dp.Routes.Sync
	if keep {
		sync = a.dp.Routes.SyncKeeping
	}
	res, err := sync(ctx, routes)
	a.metrics.fibSync.Observe(time.Since(start).Seconds())
	if err == nil {
		a.metrics.routesInstalled.Set(float64(res.Installed))
	}
	return err
}

// syncLearned programs only what changed in the learned routes since the
// last sync, with syncRoutes' checks: the runner calls it at once whenever
// best paths change, between full syncs, so that a flood of BGP updates
// reaches the kernel as it arrives, at a cost that grows with the change,
// not with the table. The node's own pod CIDRs are syncRoutes' alone (their
// blackholes); the periodic resync still checks everything.
func (a *agent) syncLearned(ctx context.Context) error {
	changed, gone := a.speaker.Changes()
	if len(changed)+len(gone) == 0 {
		return nil
	}
	pods := a.bgpCfg.PodCIDRs
	learned := make([]route.Route, 0, len(changed))
	for _, r := range changed {
		if !slices.Contains(pods, r.Prefix) {
			learned = append(learned, route.Route{Prefix: r.Prefix, NextHops: r.NextHops})
		}
	}
	forbidden := append(slices.Clone(a.bgpCfg.ClusterCIDRs), pods...)
	safe, none := a.dp.Routes.ResolveChanged(learned, forbidden)
	for _, p := range gone {
		if !slices.Contains(pods, p) {
			none = append(none, p)
		}
	}
	start := time.Now()
	res, err := a.dp.Routes.Update(ctx, safe, none)
	a.metrics.fibSync.Observe(time.Since(start).Seconds())
	if err == nil {
		a.metrics.routesInstalled.Set(float64(res.Installed))
	}
	return err
}

// writeConf writes the CNI config; the same content written again means
// someone changed the file behind the agent's back.
func (a *agent) writeConf(pods []netip.Prefix) error {
	conf := a.confList(pods)
	wrote, err := a.dp.CNI.Write(conf)
	if wrote && a.lastConf != nil && reflect.DeepEqual(*a.lastConf, conf) {
		a.metrics.drift("conflist")
		a.log.Warn("the CNI config was changed behind the agent's back; rewritten", "dir", a.cfg.CNIConfDir)
	}
	if err == nil {
		a.lastConf = &conf
	}
	return err
}

func (a *agent) noteNodeGone(gone bool) {
	if gone == a.nodeGone {
		return
	}
	a.nodeGone = gone
	if gone {
		a.log.Warn("this node's Node object was deleted: withdrawing its pod CIDRs (they may be given to another node)")
	} else {
		a.log.Info("this node's Node object is back: announcing its pod CIDRs")
	}
}

// refusedList is the policies the kernel refused at the last policy sync.
func (a *agent) refusedList() []policy.Refusal {
	var out []policy.Refusal
	for key, msg := range a.policy.refused {
		ns, name, _ := strings.Cut(key, "/")
		out = append(out, policy.Refusal{Namespace: ns, Name: name, Err: errors.New(msg)})
	}
	slices.SortFunc(out, func(x, y policy.Refusal) int { return strings.Compare(x.Namespace+"/"+x.Name, y.Namespace+"/"+y.Name) })
	return out
}

// notReady says why the node cannot take pods now, or nil.
func notReady(announcing, nodeGone bool, routes, conf, policy, announce error) error {
	switch {
	case !announcing:
		return errors.New("the datapath was never complete: pod CIDRs not announced yet")
	case nodeGone:
		return errors.New("this node's Node object is deleted: pod CIDRs withdrawn")
	}
	return errors.Join(wrapIf("routes", routes), wrapIf("CNI config", conf), wrapIf("policy", policy), wrapIf("announcements", announce))
}

func wrapIf(what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", what, err)
}

// confListPresent checks, at each /readyz, that the CNI config the runtime
// reads is there: it may have been deleted since the last sync.
func (a *agent) confListPresent() error {
	if _, err := os.Stat(filepath.Join(a.cfg.CNIConfDir, cni.ConfListFile)); err != nil {
		return fmt.Errorf("CNI config: %w", err)
	}
	return nil
}

func (a *agent) confList(pods []netip.Prefix) cni.ConfList {
	return cni.ConfList{MTU: a.cfg.MTU, Ranges: pods, DataDir: a.cfg.DataDir, PortMap: *a.cfg.PortMap, CNIVersion: a.cfg.CNIVersion}
}

// blackholes keep packets for unused addresses of the node's own pod CIDRs
// from looping back to the router that sent them; the pods' /32 and /128
// routes are more specific and win.
func blackholes(pods []netip.Prefix) []route.Route {
	out := make([]route.Route, 0, len(pods))
	for _, p := range pods {
		out = append(out, route.Route{Prefix: p, Blackhole: true})
	}
	return out
}

// drainServices are the Service addresses to announce: all of them, until
// a draining node's delay is over. The pod CIDRs stay announced (marked
// GRACEFUL_SHUTDOWN): only this node reaches its pods.
func (a *agent) drainServices(snap Snapshot) []netip.Prefix {
	switch {
	case !snap.Drain:
		if !a.drainAt.IsZero() {
			a.log.Info("drain ended: announcing at full preference again")
		}
		a.drainAt, a.drainDone = time.Time{}, false
		return snap.Services
	case a.drainAt.IsZero():
		a.drainAt = time.Now()
		a.log.Warn("draining: every announcement marked GRACEFUL_SHUTDOWN; Service addresses withdrawn after the delay",
			"delay", snap.DrainDelay)
		time.AfterFunc(snap.DrainDelay, a.poke)
	}
	if time.Since(a.drainAt) >= snap.DrainDelay {
		if !a.drainDone {
			a.drainDone = true
			a.log.Warn("drain delay over: Service addresses withdrawn; pod CIDRs stay announced, marked", "services", len(snap.Services))
		}
		return nil
	}
	return snap.Services
}
