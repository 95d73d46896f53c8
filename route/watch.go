package route

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/vishvananda/netlink/nl"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Watch reports route changes made by others, so the caller's loop resyncs
// within moments instead of at the next periodic full sync. poke(true):
// a route of Petrel's protocol was deleted, or a route of another protocol
// appeared in the main table (it may have replaced one of Petrel's): what
// the caller remembers of the table is stale. poke(false): a route of
// another protocol went away, which may free a prefix Petrel was kept out
// of, or a route of another table changed (an address came or went), which
// may change how a next hop resolves but not Petrel's routes, which live
// in the main table only.
// Petrel's own installs do not poke, so a sync does not wake itself: a
// socket filter drops their notifications in the kernel, so that
// installing 100,000 routes neither costs the agent 100,000 messages to
// read nor overflows the socket. An overflow or a failed socket pokes as
// stale: events may have been lost.
//
// Watch returns once the subscription is live; stop ends it. ns is the
// namespace to watch, netns.None() for the caller's own. poke must not block.
func Watch(ns netns.NsHandle, proto int, poke func(stale bool)) (stop func(), err error) {
	s, err := watchSocket(ns, proto)
	if err != nil {
		return nil, err
	}
	w := &watcher{s: s}
	go w.run(ns, proto, poke)
	return w.stop, nil
}

type watcher struct {
	mu      sync.Mutex
	s       *nl.NetlinkSocket
	stopped bool
}

func (w *watcher) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.s.Close() // unblocks Receive
}

func (w *watcher) run(ns netns.NsHandle, proto int, poke func(stale bool)) {
	w.mu.Lock()
	s := w.s
	w.mu.Unlock()
	for {
		msgs, _, err := s.Receive()
		w.mu.Lock()
		stopped := w.stopped
		w.mu.Unlock()
		if stopped {
			return
		}
		if err != nil {
			poke(true)
			if errors.Is(err, unix.ENOBUFS) {
				continue // the socket overflowed; it still works
			}
			if s = w.reopen(ns, proto); s == nil {
				return
			}
			continue
		}
		for _, m := range msgs {
			if len(m.Data) < unix.SizeofRtMsg {
				continue
			}
			ours := int(m.Data[5]) == proto           // rtm_protocol
			inMain := m.Data[4] == unix.RT_TABLE_MAIN // rtm_table
			switch {
			case !inMain:
				// Another table: the local one (an address came or
				// went: IPv6 DAD ends, kube-proxy's IPVS adds a
				// Service address) or one of policy routing. None of
				// Petrel's routes changed, but a next hop may resolve
				// differently: a sync resolves them afresh, without
				// listing the table again.
				poke(false)
			case (m.Header.Type == unix.RTM_DELROUTE && ours) || (m.Header.Type == unix.RTM_NEWROUTE && !ours):
				poke(true)
			case m.Header.Type == unix.RTM_DELROUTE:
				poke(false)
			}
		}
	}
}

// reopen replaces a failed socket, retrying every 100 ms; nil: stopped.
func (w *watcher) reopen(ns netns.NsHandle, proto int) *nl.NetlinkSocket {
	for {
		time.Sleep(100 * time.Millisecond)
		s, err := watchSocket(ns, proto)
		w.mu.Lock()
		if w.stopped {
			w.mu.Unlock()
			if s != nil {
				s.Close()
			}
			return nil
		}
		if err == nil {
			w.s.Close()
			w.s = s
		}
		w.mu.Unlock()
		if err == nil {
			return s
		}
	}
}

// watchSocket subscribes to IPv4 and IPv6 route changes, without those
// that announce a route of Petrel's own protocol.
func watchSocket(ns netns.NsHandle, proto int) (*nl.NetlinkSocket, error) {
	groups := []uint{unix.RTNLGRP_IPV4_ROUTE, unix.RTNLGRP_IPV6_ROUTE}
	var s *nl.NetlinkSocket
	var err error
	if ns.IsOpen() {
		s, err = nl.SubscribeAt(ns, netns.None(), unix.NETLINK_ROUTE, groups...)
	} else {
		s, err = nl.Subscribe(unix.NETLINK_ROUTE, groups...)
	}
	if err != nil {
		return nil, fmt.Errorf("subscribe to route changes: %w", err)
	}
	filter := ownAddsFilter(proto)
	err = unix.SetsockoptSockFprog(s.GetFd(), unix.SOL_SOCKET, unix.SO_ATTACH_FILTER,
		&unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]})
	if err == nil {
		// Others' changes come in bursts too (a routing daemon beside
		// Petrel): room for a large one.
		err = s.SetReceiveBufferSize(8<<20, true)
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("route change socket: %w", err)
	}
	return s, nil
}

// ownAddsFilter is a classic BPF socket filter that drops RTM_NEWROUTE
// notifications of protocol proto and passes everything else. Each route
// notification is a datagram of its own, so the filter sees one message:
// its nlmsghdr (type at offset 4, in host byte order) and its rtmsg
// (rtm_protocol at 16+5).
func ownAddsFilter(proto int) []unix.SockFilter {
	// An absolute half-word load reads network byte order: compare with
	// the host-order type as the load will see it.
	var b [2]byte
	binary.NativeEndian.PutUint16(b[:], unix.RTM_NEWROUTE)
	newRoute := uint32(binary.BigEndian.Uint16(b[:]))
	return []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 4},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: newRoute, Jt: 0, Jf: 3},
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: unix.SizeofNlMsghdr + 5},
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: uint32(proto), Jt: 0, Jf: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},          // drop
		{Code: unix.BPF_RET | unix.BPF_K, K: 0xffffffff}, // pass
	}
}
