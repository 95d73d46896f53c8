package bgp

import (
	"context"
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
const (
	resendPoll  = 20 * time.Millisecond
	resendLimit = 30 * time.Second
)

// resendWhenEstablished waits until GoBGP counts the session with addr as
// Established (its own view, set after the initial dump), then re-sends
// the table to it. It gives up when the session goes down or after
// resendLimit.
func (s *Speaker) resendWhenEstablished(addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), resendLimit)
	defer cancel()
	for ctx.Err() == nil {
		var state api.PeerState_SessionState
		found := false
		err := s.srv.ListPeer(ctx, &api.ListPeerRequest{Address: addr}, func(p *api.Peer) {
			if p.GetState() != nil {
				state, found = p.GetState().GetSessionState(), true
			}
		})
		switch {
		case err != nil || !found:
			return // the speaker stopped or the peer is gone
		case state == api.PeerState_SESSION_STATE_ESTABLISHED:
			if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr, Soft: true,
				Direction: api.ResetPeerRequest_DIRECTION_OUT}); err != nil {
				s.log.Debug("re-send table to a new session", "peer", addr, "err", err)
			}
			return
		case state != api.PeerState_SESSION_STATE_OPENCONFIRM:
			return // down again: the next Established starts over
		}
		time.Sleep(resendPoll)
	}
}
