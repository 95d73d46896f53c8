package policy

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// exchangeTimeout bounds the wait for the kernel's answer to a
// transaction (it answers at once; a batch it could not even parse gets
// no answer at all).
const exchangeTimeout = time.Minute

// exchange sends a transaction on a socket of its own and reads the
// answers up to the last message's acknowledgement. Every error the kernel
// reports is returned with what the message was; the kernel applied
// nothing then. A socket per transaction: replacing the table is rare
// (start, periodic resync, after a failure), and no answer of an earlier
// one can be mistaken for this one's.
func (s *Syncer) exchange(w *txn) error {
	done := w.finish()
	s.seq = w.base + uint32(len(w.what))
	cfg := &netlink.Config{}
	if s.ns.IsOpen() {
		cfg.NetNS = int(s.ns)
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return fmt.Errorf("nftables socket: %w", err)
	}
	defer conn.Close()
	// Errors carry the failing message's header only, not the message
	// back (a set-element message is up to 35 KB), and the kernel's
	// explanation when it has one.
	for _, o := range []netlink.ConnOption{netlink.CapAcknowledge, netlink.ExtendedAcknowledge} {
		if err := conn.SetOption(o, true); err != nil {
			return fmt.Errorf("nftables socket: %w", err)
		}
	}
	if err := bigBuffers(conn); err != nil {
		return fmt.Errorf("nftables socket: %w", err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), w.buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	if err = errors.Join(err, serr); err != nil {
		return fmt.Errorf("netlink send: %w", err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(exchangeTimeout)); err != nil {
		return err
	}
	var errs []error
	buf := make([]byte, 1<<16)
	for {
		n, err, rerr := recvRaw(raw, buf)
		if err = errors.Join(err, rerr); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				err = fmt.Errorf("no answer from the kernel in %s", exchangeTimeout)
			}
			return errors.Join(append(errs, fmt.Errorf("netlink receive: %w", err))...)
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("netlink receive: %w", err))...)
		}
		for _, m := range msgs {
			seq := m.Header.Seq
			if m.Header.Type != unix.NLMSG_ERROR || len(m.Data) < 4 || seq-w.base >= uint32(len(w.what)) {
				continue
			}
			code := int32(binary.NativeEndian.Uint32(m.Data))
			if code != 0 {
				err := error(syscall.Errno(-code))
				if msg := extackMessage(m.Data); msg != "" {
					err = fmt.Errorf("%w (%s)", err, msg)
				}
				errs = append(errs, fmt.Errorf("%s: %w", w.what[seq-w.base], err))
			}
			// The batch's first message carries errors of the whole batch
			// (out of memory, a failed commit), after which nothing else
			// may come.
			if seq == done || (seq == w.base && code != 0) {
				return errors.Join(errs...)
			}
		}
	}
}

// recvRaw reads one datagram of a netlink socket into buf, waiting for
// it (or the socket's deadline): err is the wait's error, rerr the read's.
func recvRaw(raw syscall.RawConn, buf []byte) (n int, err, rerr error) {
	err = raw.Read(func(fd uintptr) bool {
		n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
		return rerr != unix.EAGAIN
	})
	return n, err, rerr
}

// extackMessage is the kernel's explanation in an error message: after
// the error code and the request's header (capped), NLMSGERR_ATTR_MSG.
func extackMessage(data []byte) string {
	if len(data) < 4+unix.SizeofNlMsghdr {
		return ""
	}
	attrs, err := netlink.UnmarshalAttributes(data[4+unix.SizeofNlMsghdr:])
	if err != nil {
		return ""
	}
	for _, a := range attrs {
		if a.Type == unix.NLMSGERR_ATTR_MSG {
			return string(trimNUL(a.Data))
		}
	}
	return ""
}

func trimNUL(b []byte) []byte {
	for len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	return b
}
