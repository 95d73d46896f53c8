package bgp

import (
	"context"
	"net/netip"
	"sync"
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

// GoBGP (v4.8.0) can leave a new session without a route: it handles
// different peers' messages concurrently, and a session's initial table
// dump runs before the session counts as Established for the rest of the
// server. A path that arrives from another peer after the dump was read
// but is propagated before the new session counts as Established is sent
// neither way — a route reflector's client then lacks that route until its
// session restarts (the cluster simulation lost routes on a third of the
// sessions from 10 clients on). So once GoBGP counts a new session as
// Established, the speaker has the whole table sent to it again (a soft
// reset out): everything in the table by then reaches the peer, and what
// arrives later is propagated normally.
//
// One goroutine does it for all sessions, looking at every peer's state
// once a tick: a reflector whose thousands of clients come up together
// must not ask GoBGP's management loop about each of them in turn.
const (
	resendTick  = 500 * time.Millisecond
	resendLimit = time.Minute // a session stuck in OpenConfirm longer is dropped from the list
)

type resender struct {
	mu      sync.Mutex
	pending map[netip.Addr]time.Time // sessions that went Established, since
	wake    chan struct{}
}

func newResender() *resender {
	return &resender{pending: map[netip.Addr]time.Time{}, wake: make(chan struct{}, 1)}
}

// established notes a session that just went Established.
func (r *resender) established(addr netip.Addr) {
	r.mu.Lock()
	r.pending[addr] = time.Now()
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// run re-sends the table to each noted session once GoBGP counts it as
// Established, until ctx ends.
func (s *Speaker) runResender(ctx context.Context) {
	r := s.resend
	tick := time.NewTicker(resendTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.wake:
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if !s.resendDue(ctx) {
				break
			}
		}
	}
}

// resendDue handles the noted sessions and reports whether some are still
// waiting.
func (s *Speaker) resendDue(ctx context.Context) bool {
	r := s.resend
	states, err := s.listPeers(ctx)
	if err != nil {
		return true // the server is busy or stopping: next tick
	}
	r.mu.Lock()
	var due []netip.Addr
	for addr, since := range r.pending {
		st := states[addr].GetState().GetSessionState()
		switch {
		case st == api.PeerState_SESSION_STATE_ESTABLISHED:
			due = append(due, addr)
			delete(r.pending, addr)
		case st != api.PeerState_SESSION_STATE_OPENCONFIRM || time.Since(since) > resendLimit:
			delete(r.pending, addr) // down again: its next Established notes it anew
		}
	}
	waiting := len(r.pending) > 0
	r.mu.Unlock()
	for _, addr := range due {
		if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.String(), Soft: true,
			Direction: api.ResetPeerRequest_DIRECTION_OUT}); err != nil {
			s.log.Debug("re-send the table to a new session", "peer", addr, "err", err)
		}
	}
	return waiting
}
