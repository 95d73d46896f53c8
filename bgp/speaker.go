package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/config/oc"
	"github.com/osrg/gobgp/v4/pkg/metrics"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
)

// Speaker is the embedded BGP speaker of one node.
type Speaker struct {
	cfg  Config
	log  *slog.Logger
	srv  *server.BgpServer
	poke func() // sessions changed

	rib rib

	mu      sync.Mutex
	peers   map[netip.Addr]Peer    // as configured in GoBGP
	adverts map[netip.Prefix]bool  // paths originated here
	dropped map[netip.Addr]bool    // fell from Established: recreate
	limited map[netip.Addr]limited // shut down for their prefix limit: wait
	states  map[netip.Addr]string  // last session state seen
	guard   string                 // key of the installed guard (guard.go)
	scope   []netip.Prefix         // the guard's Service scope
	drain   bool                   // the guard's drain statements are in
	// What GoBGP held right after Set configured it, for Reconcile: each
	// peer's configuration and the guard's policies, as text.
	prints     map[netip.Addr]string
	guardState string
	// communities go on every originated path; originatedWith is what the
	// current paths carry.
	communities, originatedWith []uint32

	resend *resender // resend.go
	count  *counter  // count.go
	stop   context.CancelFunc
}

// Notify is how a speaker tells its caller that something changed. Both
// are called from GoBGP's goroutines and must not block; either may be nil.
type Notify struct {
	// Routes: learned best paths changed, Changes has news.
	Routes func()
	// Sessions: a session changed state, so Set and PeerStates may have
	// work.
	Sessions func()
}

// New starts a speaker with no peers and no paths.
func New(ctx context.Context, cfg Config, log *slog.Logger, notify Notify) (*Speaker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	lvl := &slog.LevelVar{}
	lvl.Set(slog.LevelInfo)
	opts := []server.ServerOption{server.LoggerOption(log.With("library", "gobgp"), lvl)}
	if cfg.GRPCAddress != "" {
		if err := prepareSocket(cfg.GRPCAddress); err != nil {
			return nil, err
		}
		opts = append(opts, server.GrpcListenAddress(cfg.GRPCAddress),
			server.GrpcOption(withoutPasswords()))
	}
	poke, pokeRoutes := orNothing(notify.Sessions), orNothing(notify.Routes)
	s := &Speaker{
		cfg: cfg, log: log, srv: server.NewBgpServer(opts...), poke: poke,
		peers: map[netip.Addr]Peer{}, adverts: map[netip.Prefix]bool{},
		dropped: map[netip.Addr]bool{}, states: map[netip.Addr]string{}, prints: map[netip.Addr]string{},
		limited: map[netip.Addr]limited{},
		rib:     newRib(),
		resend:  newResender(),
		count:   newCounter(),
	}
	var rctx context.Context
	rctx, s.stop = context.WithCancel(ctx)
	go s.runResender(rctx)
	go s.runLimits(rctx)
	go s.srv.Serve()
	// Only the two families Petrel speaks: GoBGP otherwise makes a table of
	// 2,048 shards for each of the thirty-odd it knows, twice (about 11 MB).
	global := &api.Global{Asn: cfg.ASN, RouterId: cfg.RouterID.String(), ListenPort: cfg.ListenPort, UseMultiplePaths: true,
		Families: []uint32{uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV4_UNICAST]), uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV6_UNICAST])}}
	for _, a := range cfg.ListenAddresses {
		global.ListenAddresses = append(global.ListenAddresses, a.String())
	}
	err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: global})
	if err == nil {
		err = s.installGuard(ctx)
	}
	if err == nil {
		err = lockSocket(cfg.GRPCAddress)
	}
	if err == nil {
		err = s.srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{
			OnBestPath:   func(ps []*apiutil.Path, _ time.Time) { s.rib.apply(ps); pokeRoutes() },
			OnPeerUpdate: s.onPeer,
		}, server.WatchBestPath(false), server.WatchPeer())
	}
	if err == nil {
		err = s.srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{
			OnPathUpdate: func(ps []*apiutil.Path, _ time.Time) { s.count.counted(ps) },
		}, server.WatchUpdate(false, "", ""))
	}
	if err != nil {
		s.Stop()
		return nil, fmt.Errorf("start bgp: %w", err)
	}
	return s, nil
}

func orNothing(f func()) func() {
	if f == nil {
		return func() {}
	}
	return f
}

// Collector exports GoBGP's per-peer metrics: session state, messages,
// routes received, accepted and advertised.
func (s *Speaker) Collector() prometheus.Collector { return metrics.NewBgpCollector(s.srv) }

// Stop closes every session with a NOTIFICATION (peers withdraw this node's
// routes at once) and stops the speaker: for leaving for good. A restart
// should instead just exit, so that peers keep the routes as stale
// (graceful restart) until the new process announces them again.
func (s *Speaker) Stop() {
	s.stop()
	s.srv.Stop()
}

// onPeer records session states. A session that falls back to Idle after
// it got as far as OpenSent is marked for recreation: GoBGP holds a dropped peer idle for a fixed 5 s
// and refuses its connections meanwhile, while a new peer connects at once,
// which brings a restarted top-of-rack router back in about a second.
func (s *Speaker) onPeer(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
	if ev.Type != apiutil.PEER_EVENT_STATE {
		return
	}
	addr, state := ev.Peer.State.NeighborAddress, ev.Peer.State.SessionState
	s.mu.Lock()
	prev := s.states[addr]
	s.states[addr] = stateName(state)
	// Shut down over its prefix limit (count.go): it stays down, waiting.
	if state != bgp.BGP_FSM_ESTABLISHED && s.waiting(addr, time.Now()) {
		s.states[addr] = "prefix-limit"
		s.mu.Unlock()
		return
	}
	// Also after a failed open (a connection collision, a NOTIFICATION in
	// OpenSent): GoBGP applies the same 5 s hold then.
	if state == bgp.BGP_FSM_IDLE && (prev == "established" || prev == "opensent" || prev == "openconfirm") {
		s.dropped[addr] = true
	}
	// Back up on its own before Set recreated it: nothing to recreate (a
	// reset now would only flap a working session).
	if state == bgp.BGP_FSM_ESTABLISHED {
		delete(s.dropped, addr)
	}
	s.mu.Unlock()
	if prev != stateName(state) {
		s.log.Info("bgp session", "peer", addr, "from", prev, "to", stateName(state))
		s.poke()
		if state == bgp.BGP_FSM_ESTABLISHED {
			s.resend.established(addr) // resend.go
		}
	}
}

func stateName(st bgp.FSMState) string {
	switch st {
	case bgp.BGP_FSM_IDLE:
		return "idle"
	case bgp.BGP_FSM_CONNECT:
		return "connect"
	case bgp.BGP_FSM_ACTIVE:
		return "active"
	case bgp.BGP_FSM_OPENSENT:
		return "opensent"
	case bgp.BGP_FSM_OPENCONFIRM:
		return "openconfirm"
	case bgp.BGP_FSM_ESTABLISHED:
		return "established"
	}
	return "unknown"
}

// PeerStates returns the last seen session state of every configured peer.
func (s *Speaker) PeerStates() map[netip.Addr]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[netip.Addr]string{}
	for a := range s.peers {
		out[a] = s.states[a]
		if out[a] == "" {
			out[a] = "idle"
		}
	}
	return out
}

// Changes counts what a Set did.
type Changes struct {
	PeersAdded, PeersRemoved, PathsAdded, PathsRemoved int
}

// Adverts are this node's own announcements: its prefixes, each tagged with
// the standard communities (RFC 1997).
type Adverts struct {
	// Prefixes are the node's pod CIDRs.
	Prefixes []netip.Prefix
	// Services are the Service addresses this node announces now (host
	// routes, or a service CIDR as one aggregate); each must lie within
	// ServiceScope (services.go).
	Services []netip.Prefix
	// ServiceScope is where any node of the cluster may announce Service
	// addresses: a host route inside one of these prefixes, or exactly
	// the prefix. Peers with AcceptServices may send them; a route
	// reflector passes them on.
	ServiceScope []netip.Prefix
	Communities  []uint32
	// Drain takes the node out of service (RFC 8326): every announcement
	// carries GRACEFUL_SHUTDOWN and the lowest preference — local-pref 0
	// to iBGP peers, this AS prepended three more times to eBGP peers —
	// so that peers move their traffic to other paths first.
	Drain bool
}

// Set makes the speaker originate exactly adverts and peer with exactly
// peers. It is idempotent: a second call with the same input changes
// nothing (a changed peer is replaced, which resets its session). Paths go in before peers, so a restarted node
// announces its prefixes in the first UPDATEs, before End-of-RIB, and
// peers holding its routes as stale never see them withdrawn.
func (s *Speaker) Set(ctx context.Context, peers []Peer, adverts Adverts) (Changes, error) {
	want := map[netip.Addr]Peer{}
	for _, p := range peers {
		if err := p.Validate(); err != nil {
			return Changes{}, err
		}
		if _, dup := want[p.Address]; dup {
			return Changes{}, fmt.Errorf("peer %s: configured twice", p.Address)
		}
		want[p.Address] = p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var c Changes
	// The guard first: a drain's export statements must be in place when
	// the paths are originated again with GRACEFUL_SHUTDOWN.
	errG := s.updateGuard(ctx, want, adverts.ServiceScope, adverts.Drain)
	errA := s.setAdverts(adverts, &c)
	if errG != nil {
		return c, errors.Join(errA, errG) // no peer may come up unguarded
	}
	errP := s.setPeers(ctx, want, &c)
	return c, errors.Join(errA, errP)
}

func (s *Speaker) setPeers(ctx context.Context, want map[netip.Addr]Peer, c *Changes) error {
	s.count.setLimits(want, s.cfg)
	var errs []error
	for addr := range s.peers {
		if _, ok := want[addr]; !ok {
			err := s.deletePeer(ctx, addr)
			if err == nil {
				c.PeersRemoved++
			}
			errs = append(errs, err)
		}
	}
	for addr, p := range want {
		cur, ok := s.peers[addr]
		if ok && cur.sameSession(p) && (!s.dropped[addr] && !s.limited[addr].due(time.Now()) || s.waiting(addr, time.Now())) {
			if !cur.sameGuard(p) {
				// The guard already holds the new prefixes: apply it to what
				// the peer sent before (GoBGP keeps rejected paths too), and
				// send the peer what it may have now.
				s.peers[addr] = p
				dir := api.ResetPeerRequest_DIRECTION_IN
				if cur.Withhold != p.Withhold {
					dir = api.ResetPeerRequest_DIRECTION_BOTH
				}
				if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.String(), Soft: true, Direction: dir}); err != nil {
					errs = append(errs, fmt.Errorf("apply the guard to peer %s: %w", addr, err))
				}
			}
			continue
		}
		if ok {
			l, wasLimited := s.limited[addr] // a retry: the next shutdown waits longer
			if err := s.deletePeer(ctx, addr); err != nil {
				errs = append(errs, err)
				continue
			}
			if wasLimited {
				s.limited[addr] = l
			}
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: toAPIPeer(p, s.cfg)}); err != nil {
			errs = append(errs, fmt.Errorf("add peer %s: %w", addr, err))
			continue
		}
		s.peers[addr] = p
		if l, ok := s.limited[addr]; ok {
			l.retryAt = time.Time{} // retried: the next shutdown waits longer
			s.limited[addr] = l
		}
		if got, err := s.listPeers(ctx, addr); err == nil && got[addr] != nil {
			s.prints[addr] = peerPrint(got[addr])
		}
		delete(s.dropped, addr)
		c.PeersAdded++
		s.log.Info("bgp peer configured", "peer", addr, "asn", p.ASN)
	}
	return errors.Join(errs...)
}

func (s *Speaker) deletePeer(ctx context.Context, addr netip.Addr) error {
	if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		// Already gone (deleted through the API): forget it, or every
		// later Set would fail on it.
		if got, lerr := s.listPeers(ctx, addr); lerr != nil || got[addr] != nil {
			return fmt.Errorf("delete peer %s: %w", addr, err)
		}
	}
	delete(s.prints, addr)
	delete(s.limited, addr)
	delete(s.peers, addr)
	delete(s.states, addr)
	return nil
}

func (s *Speaker) setAdverts(adverts Adverts, c *Changes) error {
	s.communities = slices.Clone(adverts.Communities)
	if adverts.Drain {
		s.communities = append(s.communities, GracefulShutdown)
	}
	want := map[netip.Prefix]bool{}
	for _, p := range adverts.Prefixes {
		want[p.Masked()] = true
	}
	outside := servicesIn(adverts, want) // services.go

	var add, del []*apiutil.Path
	// New communities: originate every path again (a path from the same
	// source replaces the old one; no withdrawal in between).
	redo := !slices.Equal(s.communities, s.originatedWith)
	for p := range want {
		if !s.adverts[p] || redo {
			add = append(add, originated(p, s.communities))
		}
	}
	for p := range s.adverts {
		if !want[p] {
			del = append(del, originated(p, nil))
		}
	}
	var errs []error
	if len(add) > 0 {
		rs, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: add})
		errs = append(errs, err)
		for i, r := range rs {
			errs = append(errs, r.Error)
			if r.Error == nil && i < len(add) {
				s.adverts[prefixOf(add[i])] = true
				c.PathsAdded++
			}
		}
	}
	if len(del) > 0 {
		err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: del})
		errs = append(errs, err)
		if err == nil {
			for _, p := range del {
				delete(s.adverts, prefixOf(p))
			}
			c.PathsRemoved += len(del)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return errors.Join(fmt.Errorf("originate %v: %w", slices.Collect(maps.Keys(want)), err), outside)
	}
	s.originatedWith = s.communities
	return outside // the rest is announced all the same
}

// ParseCommunity reads a standard community written as "AS:VALUE".
func ParseCommunity(v string) (uint32, error) {
	hi, lo, ok := strings.Cut(v, ":")
	a, errA := strconv.ParseUint(hi, 10, 16)
	b, errB := strconv.ParseUint(lo, 10, 16)
	if !ok || errA != nil || errB != nil {
		return 0, fmt.Errorf("community %q: want AS:VALUE, each 0-65535", v)
	}
	return uint32(a)<<16 | uint32(b), nil
}

// originated is a path for one of this node's prefixes. The next hop is
// left unspecified: GoBGP puts the session's local address in its place.
func originated(p netip.Prefix, communities []uint32) *apiutil.Path {
	nlri, _ := bgp.NewIPAddrPrefix(p)
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if len(communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(communities))
	}
	if slices.Contains(communities, GracefulShutdown) {
		// Draining: the lowest preference to iBGP peers (RFC 8326).
		attrs = append(attrs, bgp.NewPathAttributeLocalPref(0))
	}
	fam := bgp.RF_IPv4_UC
	if p.Addr().Is4() {
		nh, _ := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		attrs = append(attrs, nh)
	} else {
		fam = bgp.RF_IPv6_UC
		mp, _ := bgp.NewPathAttributeMpReachNLRI(fam, []bgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		attrs = append(attrs, mp)
	}
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs, Age: time.Now().Unix()}
}

func prefixOf(p *apiutil.Path) netip.Prefix {
	if n, ok := p.Nlri.(*bgp.IPAddrPrefix); ok {
		return n.Prefix
	}
	return netip.Prefix{}
}
