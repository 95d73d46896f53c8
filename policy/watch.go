package policy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"syscall"

	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Watch reports changes other processes make to Petrel's table: the table,
// a chain, a rule or a set deleted or added by hand (`nft delete table inet
// petrel`, a rule flushed). drift is called with the kind of object, and
// must not block; the caller invalidates the Syncer and syncs at once,
// which replaces the table whole. Changes Petrel's own transactions make
// are told apart by who committed them: each transaction ends with a
// generation message carrying the committing thread's ID, which is one of
// this process's threads for Petrel's own. Set elements are not watched:
// their events do not name the table, and other programs (a Service proxy)
// change their own sets all the time; the periodic resync repairs them.
//
// The messages are read from the nftables multicast group directly, and
// only their headers and table names are decoded: Petrel's own first
// transaction at 10,000 pods and 1,000 policies notifies about 300,000 set
// elements at once. (A general monitor decoded each of them, 100 MB of
// garbage in the agent; with a default socket buffer it overflowed, read
// the end of Petrel's own transaction as someone else's change, replaced
// the table a second time and watched nothing from then on.)
//
// lost is called (and must not block) when events were lost anyway: the
// socket overflowed under a transaction larger than its buffer. Whose it
// was cannot be told then, and it is not reported as drift, or Petrel's
// own large transactions would replace the table again and again; the
// periodic resync repairs what was missed.
//
// Watch returns once the subscription is live; it ends when stop is called.
// ns is the namespace to watch, netns.None() for the caller's own.
func Watch(ns netns.NsHandle, drift func(object string), lost func()) (stop func(), err error) {
	cfg := &netlink.Config{Groups: 1 << (unix.NFNLGRP_NFTABLES - 1)}
	if ns.IsOpen() {
		cfg.NetNS = int(ns)
	}
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, cfg)
	if err != nil {
		return nil, fmt.Errorf("nftables monitor: %w", err)
	}
	raw, err := conn.SyscallConn()
	if err == nil {
		var serr error
		err = raw.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, monitorBuffer)
		})
		if err == nil {
			err = serr
		}
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("nftables monitor: %w", err)
	}
	w := &watcher{drift: drift, lost: lost, comm: ownComm()}
	go w.run(raw)
	return func() { conn.Close() }, nil
}

// monitorBuffer bounds what the socket holds unread: room for a
// transaction of several hundred thousand notifications.
const monitorBuffer = 128 << 20

type watcher struct {
	drift   func(string)
	lost    func()
	comm    string
	touched string // the first object of Petrel's table in the transaction so far
}

func (w *watcher) run(raw syscall.RawConn) {
	buf := make([]byte, 1<<16)
	for {
		n, err, rerr := recvRaw(raw, buf)
		switch {
		case err != nil:
			return // closed
		case rerr == unix.ENOBUFS:
			w.touched = "" // a transaction's start is gone: decide nothing on its end
			w.lost()
			continue
		case rerr != nil:
			return
		}
		w.messages(buf[:n])
	}
}

// messages handles one datagram's messages.
func (w *watcher) messages(b []byte) {
	for len(b) >= unix.NLMSG_HDRLEN {
		l := int(binary.NativeEndian.Uint32(b[0:4]))
		if l < unix.NLMSG_HDRLEN || l > len(b) {
			return
		}
		typ := binary.NativeEndian.Uint16(b[4:6])
		w.message(typ, b[unix.NLMSG_HDRLEN:l])
		b = b[min(nlmAlign(l), len(b)):]
	}
}

// message handles one nftables notification: the table objects name their
// table in their first attribute, and the generation message that ends
// every transaction names who committed it.
func (w *watcher) message(typ uint16, data []byte) {
	if typ>>8 != unix.NFNL_SUBSYS_NFTABLES || len(data) < 4 {
		return
	}
	family, attrs := data[0], data[4:]
	var obj string
	switch typ & 0xff {
	case unix.NFT_MSG_NEWTABLE, unix.NFT_MSG_DELTABLE:
		obj = "table"
	case unix.NFT_MSG_NEWCHAIN, unix.NFT_MSG_DELCHAIN:
		obj = "chain"
	case unix.NFT_MSG_NEWRULE, unix.NFT_MSG_DELRULE:
		obj = "rule"
	case unix.NFT_MSG_NEWSET, unix.NFT_MSG_DELSET:
		obj = "set"
	case unix.NFT_MSG_NEWGEN:
		touched := w.touched
		w.touched = ""
		pid, _ := attr(attrs, unix.NFTA_GEN_PROC_PID)
		comm, _ := attr(attrs, unix.NFTA_GEN_PROC_NAME)
		own := len(pid) == 4 && ours(binary.BigEndian.Uint32(pid)) || w.comm != "" && string(bytes.TrimRight(comm, "\x00")) == w.comm
		if touched != "" && !own {
			w.drift(touched)
		}
		return
	default:
		return // set elements, objects, flowtables
	}
	// NFTA_TABLE_NAME, NFTA_CHAIN_TABLE, NFTA_RULE_TABLE and NFTA_SET_TABLE
	// are all attribute 1.
	name, ok := attr(attrs, 1)
	if ok && family == unix.NFPROTO_INET && string(bytes.TrimRight(name, "\x00")) == TableName && w.touched == "" {
		w.touched = obj
	}
}

// attr finds a netlink attribute's value by type.
func attr(b []byte, typ uint16) ([]byte, bool) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		t := binary.NativeEndian.Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < 4 || l > len(b) {
			return nil, false
		}
		if t == typ {
			return b[4:l], true
		}
		b = b[min(nlmAlign(l), len(b)):]
	}
	return nil, false
}

func nlmAlign(l int) int { return (l + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// ownComm is this process's command name as the kernel reports it. The
// generation message's thread ID is the kernel's global one, which a
// process in its own PID namespace (a pod without hostPID) cannot look up
// in /proc/self/task; the name it can.
func ownComm() string {
	b, err := os.ReadFile("/proc/self/comm")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// ours reports whether thread id belongs to this process.
func ours(id uint32) bool {
	if int(id) == os.Getpid() {
		return true
	}
	_, err := os.Stat(fmt.Sprintf("/proc/self/task/%d", id))
	return err == nil
}
