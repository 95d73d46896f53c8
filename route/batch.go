package route

import (
	"encoding/binary"
	"fmt"
	"math"
	"syscall"

	"golang.org/x/sys/unix"
)

// batchSize is how many route requests go into one write. The kernel
// processes them in order within that one system call.
const batchSize = 512

// Apply adds, changes, then removes routes, many per system call: one
// netlink round trip per route made installing 100,000 routes take
// seconds. It returns one error (or nil) per route, in that order.
//
// The requests ask for no acknowledgement: the kernel answers only those
// that fail, and a final no-op request that does ask for one marks the end
// of the batch (netlink handles a batch in order), so a batch of 512 routes
// costs one write and one read, not 513 reads.
//
// An add never replaces: it is an exclusive create, and a prefix already
// held by a route of another protocol (the administrator's static default,
// the CNI plugin's per-pod route) fails with ErrHeld and stays as it is. A
// change replaces a route that was Petrel's when the table was listed; a
// delete names Petrel's protocol, which the kernel matches, so it never
// removes another's route. Removing a route that is already gone is
// success.
func (k *Kernel) Apply(add, change, remove []Route) []error {
	n := len(add) + len(change) + len(remove)
	errs := make([]error, n)
	for start := 0; start < n; start += batchSize {
		end := min(start+batchSize, n)
		buf := k.buf[:0]
		if k.seq > math.MaxUint32-batchSize-1 {
			k.seq = 1 // a batch's numbers must not wrap: exchange compares them
		}
		base := k.seq
		for i := start; i < end; i++ {
			seq := base + uint32(i-start)
			switch r, verb := applied(i, add, change, remove); verb {
			case "add":
				buf = k.appendRoute(buf, unix.RTM_NEWROUTE, unix.NLM_F_CREATE|unix.NLM_F_EXCL, seq, r)
			case "replace":
				buf = k.appendRoute(buf, unix.RTM_NEWROUTE, unix.NLM_F_REPLACE, seq, r)
			default:
				buf = k.appendRoute(buf, unix.RTM_DELROUTE, 0, seq, r)
			}
		}
		done := base + uint32(end-start)
		buf = appendHeader(buf, unix.NLMSG_NOOP, unix.NLM_F_ACK, done, 0)
		k.seq = done + 1
		k.buf = buf
		k.exchange(buf, base, done, errs[start:end])
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

// exchange writes one batch whose requests carry the sequence numbers
// base onwards and whose final no-op carries done, and reads the errors
// until the no-op's acknowledgement.
func (k *Kernel) exchange(buf []byte, base, done uint32, errs []error) {
	fail := func(err error) {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	if err := unix.Sendto(k.batch.GetFd(), buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		fail(fmt.Errorf("netlink send: %w", err))
		return
	}
	for {
		msgs, _, err := k.batch.Receive()
		if err != nil {
			fail(fmt.Errorf("netlink receive: %w", err))
			return
		}
		for _, m := range msgs {
			seq := m.Header.Seq
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 || seq < base || seq > done {
				continue // not this batch's (a batch given up on after a timeout)
			}
			if seq == done {
				return
			}
			if code := int32(binary.NativeEndian.Uint32(m.Data[:4])); code != 0 {
				errs[seq-base] = syscall.Errno(-code)
			}
		}
	}
}

// appendRoute renders one route change without an acknowledgement. A
// delete matches by prefix, protocol, table and (for blackholes) type,
// whatever its next hops are now.
func (k *Kernel) appendRoute(buf []byte, typ, flags uint16, seq uint32, r Route) []byte {
	start := len(buf)
	buf = appendHeader(buf, typ, flags, seq, 0)
	family, scope, rtype := uint8(unix.AF_INET6), uint8(unix.RT_SCOPE_UNIVERSE), uint8(unix.RTN_UNICAST)
	if r.Prefix.Addr().Is4() {
		family = unix.AF_INET
	}
	if typ == unix.RTM_DELROUTE {
		scope, rtype = unix.RT_SCOPE_NOWHERE, unix.RTN_UNSPEC
	}
	if r.Blackhole {
		rtype = unix.RTN_BLACKHOLE
	}
	// struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope,
	// type, flags (u32).
	buf = append(buf, family, uint8(r.Prefix.Bits()), 0, 0, unix.RT_TABLE_MAIN, uint8(k.proto), scope, rtype, 0, 0, 0, 0)
	buf = appendAttr(buf, unix.RTA_DST, r.Prefix.Addr().AsSlice())
	switch {
	case typ == unix.RTM_DELROUTE || r.Blackhole:
	case len(r.NextHops) == 1:
		buf = appendAttr(buf, unix.RTA_GATEWAY, r.NextHops[0].AsSlice())
	default:
		// RTA_MULTIPATH: one struct rtnexthop (len u16, flags u8, hops u8,
		// ifindex s32) per next hop, each followed by its RTA_GATEWAY.
		at := len(buf)
		buf = appendAttr(buf, unix.RTA_MULTIPATH, nil)
		for _, nh := range r.NextHops {
			gw := nh.AsSlice()
			buf = binary.NativeEndian.AppendUint16(buf, uint16(unix.SizeofRtNexthop+unix.SizeofRtAttr+len(gw)))
			buf = append(buf, 0, 0, 0, 0, 0, 0)
			buf = appendAttr(buf, unix.RTA_GATEWAY, gw)
		}
		binary.NativeEndian.PutUint16(buf[at:], uint16(len(buf)-at))
	}
	binary.NativeEndian.PutUint32(buf[start:], uint32(len(buf)-start))
	return buf
}

// appendHeader appends a struct nlmsghdr; the length is filled in by the
// caller when the message has a body.
func appendHeader(buf []byte, typ, flags uint16, seq, length uint32) []byte {
	if length == 0 {
		length = unix.SizeofNlMsghdr
	}
	buf = binary.NativeEndian.AppendUint32(buf, length)
	buf = binary.NativeEndian.AppendUint16(buf, typ)
	buf = binary.NativeEndian.AppendUint16(buf, flags|unix.NLM_F_REQUEST)
	buf = binary.NativeEndian.AppendUint32(buf, seq)
	return binary.NativeEndian.AppendUint32(buf, 0) // port id: the kernel's
}

// appendAttr appends a struct rtattr with its value, padded to 4 bytes.
func appendAttr(buf []byte, typ uint16, value []byte) []byte {
	buf = binary.NativeEndian.AppendUint16(buf, uint16(unix.SizeofRtAttr+len(value)))
	buf = binary.NativeEndian.AppendUint16(buf, typ)
	buf = append(buf, value...)
	for len(buf)%4 != 0 {
		buf = append(buf, 0)
	}
	return buf
}
