package agent

import (
	"net/netip"
	"time"

	"github.com/petrelnet/petrel/bgp"
)

// A restarted agent finds the learned routes of the one before it in the
// kernel, and its own speaker has learned nothing yet: a full sync would
// remove them all and put them back a second or two later, as the sessions
// come up, and traffic to other nodes' pods that no other route covers
// would be dropped meanwhile. So from its start the agent keeps them (FRR's
// zebra -K does the same): its full syncs remove no route it does not know
// of, until every configured peer has been Established for startSettle
// (what they send comes in its first moments), or startKeepMax at most. A
// route a peer withdraws meanwhile goes at once (the fast path), and the
// blackholes and every route the new sessions bring are installed as usual.
const (
	startSettle  = 3 * time.Second
	startKeepMax = 2 * time.Minute
)

type startKeep struct {
	until time.Time // keep until then; zero: not (or no longer) keeping
	allUp time.Time // since when every peer is Established; zero: not all
}

// keeping reports whether this sync must leave unknown learned routes in
// place, and ends the keeping once the peers have settled.
func (a *agent) keeping(now time.Time, peers []bgp.Peer, states map[netip.Addr]string) bool {
	k := &a.keep
	if k.until.IsZero() {
		return false
	}
	all := true
	for _, p := range peers {
		all = all && states[p.Address] == "established"
	}
	switch {
	case !now.Before(k.until):
		a.log.Info("routes learned before the start no longer kept: not every peer came back", "after", startKeepMax)
	case !all:
		k.allUp = time.Time{}
		return true
	case k.allUp.IsZero():
		k.allUp = now
		time.AfterFunc(startSettle, a.poke)
		return true
	case now.Sub(k.allUp) < startSettle:
		return true
	}
	k.until = time.Time{}
	return false
}
