package policy

import (
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netns"
)

// Watch reports changes other processes make to Petrel's table: the table,
// a chain, a rule or a set deleted or added by hand (`nft delete table inet
// petrel`, a rule flushed). drift is called with the kind of object, and
// must not block; the caller invalidates the Syncer and syncs at once,
// which replaces the table whole. Changes Petrel's own transactions make
// are told apart by who committed them: each transaction's generation
// message carries the committing thread's ID, which is one of this
// process's threads for Petrel's own. Set elements are not
// watched: their events do not name the table, and other programs (a
// Service proxy) change their own sets all the time; the periodic resync
// repairs them.
//
// Watch returns once the subscription is live; it ends when stop is called.
// ns is the namespace to watch, netns.None() for the caller's own.
func Watch(ns netns.NsHandle, drift func(object string)) (stop func(), err error) {
	opts := []nftables.ConnOption{}
	if ns.IsOpen() {
		opts = append(opts, nftables.WithNetNSFd(int(ns)))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables monitor: %w", err)
	}
	mon := nftables.NewMonitor(nftables.WithMonitorEventBuffer(1024))
	events, err := conn.AddGenerationalMonitor(mon)
	if err != nil {
		return nil, fmt.Errorf("nftables monitor: %w", err)
	}
	comm := ownComm()
	go func() {
		for gen := range events {
			if g, ok := generation(gen); ok && (ours(g.ProcPID) || g.ProcComm == comm) {
				continue
			}
			if obj := touched(gen.Changes); obj != "" {
				drift(obj)
			}
		}
	}()
	return func() { mon.Close() }, nil
}

func generation(gen *nftables.MonitorEvents) (*nftables.GenMsg, bool) {
	if gen.GeneratedBy == nil {
		return nil, false
	}
	g, ok := gen.GeneratedBy.Data.(*nftables.GenMsg)
	return g, ok
}

// touched names the first object of Petrel's table among changes, or "".
func touched(changes []*nftables.MonitorEvent) string {
	for _, c := range changes {
		var t *nftables.Table
		var obj string
		switch d := c.Data.(type) {
		case *nftables.Table:
			t, obj = d, "table"
		case *nftables.Chain:
			t, obj = d.Table, "chain"
		case *nftables.Rule:
			t, obj = d.Table, "rule"
		case *nftables.Set:
			t, obj = d.Table, "set"
		}
		if t != nil && t.Name == TableName && t.Family == nftables.TableFamilyINet {
			return obj
		}
	}
	return ""
}

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
