package route

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"
)

// batchSize is how many route requests go into one write. The kernel
// processes them in order within that one system call; their acks (a few
// dozen bytes each) must fit the socket's receive buffer.
const batchSize = 512

// Apply adds, changes, then removes routes, many per system call: one
// netlink round trip per route made installing 100,000 routes take
// seconds. It returns one error (or nil) per route, in that order.
//
// An add never replaces: it is an exclusive create, and a prefix already
// held by a route of another protocol (the administrator's static default,
// the CNI plugin's per-pod route) fails with ErrHeld and stays as it is. A
// change replaces a route that was Petrel's when the table was listed; a
// delete names Petrel's protocol, which the kernel matches, so it never
// removes another's route. Removing a route that is already gone is
// success.
func (k *Kernel) Apply(add, change, remove []Route) []error {
	reqs := make([]*nl.NetlinkRequest, 0, len(add)+len(change)+len(remove))
	for _, r := range add {
		reqs = append(reqs, k.request(unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, r))
	}
	for _, r := range change {
		reqs = append(reqs, k.request(unix.RTM_NEWROUTE, unix.NLM_F_REPLACE, r))
	}
	for _, r := range remove {
		reqs = append(reqs, k.request(unix.RTM_DELROUTE, 0, r))
	}
	errs := make([]error, len(reqs))
	for i := 0; i < len(reqs); i += batchSize {
		k.send(reqs[i:min(i+batchSize, len(reqs))], errs[i:])
	}
	for i, err := range errs {
		switch {
		case i < len(add) && err == unix.EEXIST:
			errs[i] = ErrHeld
		case i >= len(add)+len(change) && err == unix.ESRCH:
			errs[i] = nil
		}
	}
	return errs
}

// request renders one route change. A delete matches by prefix, protocol,
// table and (for blackholes) type, whatever its next hops are now.
func (k *Kernel) request(typ, flags int, r Route) *nl.NetlinkRequest {
	req := nl.NewNetlinkRequest(typ, flags|unix.NLM_F_ACK)
	msg := nl.NewRtMsg()
	msg.Family = unix.AF_INET6
	if r.Prefix.Addr().Is4() {
		msg.Family = unix.AF_INET
	}
	msg.Dst_len = uint8(r.Prefix.Bits())
	msg.Protocol = uint8(k.proto)
	if typ == unix.RTM_DELROUTE {
		msg.Scope = unix.RT_SCOPE_NOWHERE
		msg.Type = unix.RTN_UNSPEC
	}
	if r.Blackhole {
		msg.Type = unix.RTN_BLACKHOLE
	}
	req.AddData(msg)
	req.AddData(nl.NewRtAttr(unix.RTA_DST, r.Prefix.Addr().AsSlice()))
	if typ == unix.RTM_DELROUTE || r.Blackhole {
		return req
	}
	if len(r.NextHops) == 1 {
		req.AddData(nl.NewRtAttr(unix.RTA_GATEWAY, r.NextHops[0].AsSlice()))
		return req
	}
	var buf []byte
	for _, nh := range r.NextHops {
		rtnh := &nl.RtNexthop{Children: []nl.NetlinkRequestData{nl.NewRtAttr(unix.RTA_GATEWAY, nh.AsSlice())}}
		buf = append(buf, rtnh.Serialize()...)
	}
	req.AddData(nl.NewRtAttr(unix.RTA_MULTIPATH, buf))
	return req
}

// send writes one batch and reads an ack for every request in it.
func (k *Kernel) send(reqs []*nl.NetlinkRequest, errs []error) {
	var buf []byte
	pending := make(map[uint32]int, len(reqs))
	for i, r := range reqs {
		buf = append(buf, r.Serialize()...)
		pending[r.Seq] = i
	}
	fail := func(err error) {
		for _, i := range pending {
			errs[i] = err
		}
	}
	if err := unix.Sendto(k.batch.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		fail(fmt.Errorf("netlink send: %w", err))
		return
	}
	for len(pending) > 0 {
		msgs, _, err := k.batch.Receive()
		if err != nil {
			fail(fmt.Errorf("netlink receive: %w", err))
			return
		}
		for _, m := range msgs {
			i, ok := pending[m.Header.Seq]
			if !ok || m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 {
				continue
			}
			delete(pending, m.Header.Seq)
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				errs[i] = syscall.Errno(-code)
			}
		}
	}
}
