package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// Petrel enforces the prefix limit itself. GoBGP can, but it counts the
// peer's whole Adj-RIB-In at every UPDATE (a walk that copies every
// destination): 20,000 prefixes sent one per UPDATE took 66 s to install,
// against FRR's 1.2 s. Instead, the announcements in each peer's UPDATEs
// (GoBGP's pre-policy update events) are counted; they are at least what
// the peer holds in the Adj-RIB-In, since withdrawals are not subtracted
// (a withdrawal of something never sent must not buy room). When the count
// passes the limit, GoBGP counts the Adj-RIB-In once (that peer only, at
// most once a second per peer): over the limit, the peer is shut down;
// under it, the count starts again from there.

// recheckAfter spaces the exact counts of one peer.
const recheckAfter = time.Second

type counter struct {
	mu       sync.Mutex
	bound    map[netip.Addr]int // announcements since the last exact count, plus that count
	limit    map[netip.Addr]int
	checking map[netip.Addr]bool // an exact count is due or running
	last     map[netip.Addr]time.Time
	due      chan netip.Addr
}

func newCounter() *counter {
	return &counter{bound: map[netip.Addr]int{}, limit: map[netip.Addr]int{}, checking: map[netip.Addr]bool{},
		last: map[netip.Addr]time.Time{}, due: make(chan netip.Addr, 64)}
}

// setLimits takes the configured peers' limits; the others are forgotten.
func (c *counter) setLimits(peers map[netip.Addr]Peer, cfg Config) {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.limit)
	for a, p := range peers {
		limit := p.MaxPrefixes
		if limit == 0 {
			limit = DefaultMaxPrefixes(cfg, a.Is4())
		}
		c.limit[a] = int(limit)
	}
	for a := range c.bound {
		if _, ok := c.limit[a]; !ok {
			delete(c.bound, a)
			delete(c.last, a)
		}
	}
}

// counted takes one UPDATE's paths, as received.
func (c *counter) counted(paths []*apiutil.Path) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range paths {
		if _, ok := p.Nlri.(*bgp.IPAddrPrefix); !ok || p.Withdrawal {
			continue
		}
		a := p.PeerAddress
		c.bound[a]++
		if limit, ok := c.limit[a]; ok && c.bound[a] > limit && !c.checking[a] {
			select {
			case c.due <- a:
				c.checking[a] = true
			default: // the checker is behind: the next UPDATE asks again
			}
		}
	}
}

// runLimits counts the Adj-RIB-In of each peer whose announcements passed
// its limit, and shuts down those really over it.
func (s *Speaker) runLimits(ctx context.Context) {
	c := s.count
	for {
		var addr netip.Addr
		select {
		case <-ctx.Done():
			return
		case addr = <-c.due:
		}
		c.mu.Lock()
		wait := recheckAfter - time.Since(c.last[addr])
		before := c.bound[addr]
		c.mu.Unlock()
		if wait > 0 {
			time.AfterFunc(wait, func() { c.again(addr) })
			continue
		}
		n, err := s.received(ctx, addr)
		c.mu.Lock()
		limit, configured := c.limit[addr]
		c.last[addr] = time.Now()
		c.checking[addr] = false
		over := err == nil && configured && n > limit
		if err == nil && !over {
			// What arrived while GoBGP counted counts on top.
			c.bound[addr] = n + max(c.bound[addr]-before, 0)
		}
		recount := !over && configured && c.bound[addr] > limit
		c.mu.Unlock()
		if err != nil {
			s.log.Warn("could not count a peer's prefixes for its limit; counting again at its next update", "peer", addr, "err", err)
		}
		if recount {
			c.again(addr)
		}
		if over {
			s.shutDownOverLimit(ctx, addr, n, limit)
		}
	}
}

// again asks for another exact count of addr; when the checker is behind,
// the peer's next UPDATE asks again.
func (c *counter) again(addr netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case c.due <- addr:
		c.checking[addr] = true
	default:
		c.checking[addr] = false
	}
}

// received is how many paths GoBGP holds from addr (Adj-RIB-In).
func (s *Speaker) received(ctx context.Context, addr netip.Addr) (int, error) {
	got, err := s.listPeers(ctx, addr)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, a := range got[addr].GetAfiSafis() {
		n += int(a.GetState().GetReceived())
	}
	return n, nil
}

// shutDownOverLimit disables the peer (NOTIFICATION Cease, administrative
// shutdown, with the reason as its communication) and records it, so that
// Set leaves it down for its wait.
func (s *Speaker) shutDownOverLimit(ctx context.Context, addr netip.Addr, n, limit int) {
	s.mu.Lock()
	if _, ok := s.peers[addr]; !ok {
		s.mu.Unlock()
		return
	}
	s.overLimit(addr, time.Now(), n)
	s.states[addr] = "prefix-limit"
	s.mu.Unlock()
	msg := fmt.Sprintf("maximum number of prefixes reached: %d, limit %d", n, limit)
	if err := s.srv.DisablePeer(ctx, &api.DisablePeerRequest{Address: addr.String(), Communication: msg}); err != nil {
		s.log.Error("could not shut down a peer over its prefix limit", "peer", addr, "err", err)
	}
	s.count.mu.Lock()
	delete(s.count.bound, addr)
	s.count.mu.Unlock()
	s.poke()
}
