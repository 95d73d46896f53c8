package policy

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Syncer keeps Petrel's table equal to the compiled state. Every call is
// one nftables transaction: the kernel applies all of it or none, so no
// packet ever sees a half-written ruleset.
//
// The Syncer alone decides between replacing the table whole and changing
// only what differs: it replaces when it does not know what the kernel
// holds (the first sync, after a failure, after Invalidate), and otherwise
// applies the difference from the last sync.
type Syncer struct {
	conn  *nftables.Conn
	ns    netns.NsHandle // where the table is; netns.None() is our own
	seq   uint32         // of the next transaction sent by exchange
	log   *slog.Logger
	last  *Desired // what the kernel holds, nil when unknown
	stale atomic.Bool
}

// NewSyncer opens nftables in namespace ns; netns.None() is the caller's
// own (the same convention as route.OpenKernel).
func NewSyncer(ns netns.NsHandle, log *slog.Logger) (*Syncer, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(bigBuffers)}
	if ns.IsOpen() {
		opts = append(opts, nftables.WithNetNSFd(int(ns)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &Syncer{conn: c, ns: ns, log: log, seq: uint32(time.Now().UnixNano())}, nil
}

// bigBuffers lets one transaction carry a whole large ruleset: the kernel
// refuses a batch bigger than the socket's send buffer, and a cluster of
// 10,000 pods and 1,000 policies needs tens of megabytes.
func bigBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = rc.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			if e := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, 256<<20); e != nil {
				serr = e
			}
		}
	})
	return errors.Join(err, serr)
}

func (s *Syncer) table() *nftables.Table {
	return &nftables.Table{Family: nftables.TableFamilyINet, Name: TableName}
}

type chains struct{ fwd, in, eg, ing, post *nftables.Chain }

func (s *Syncer) chains(t *nftables.Table) chains {
	accept := nftables.ChainPolicyAccept
	return chains{
		fwd: &nftables.Chain{Table: t, Name: "forward", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &accept},
		in:  &nftables.Chain{Table: t, Name: "input", Type: nftables.ChainTypeFilter, Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter, Policy: &accept},
		eg:  &nftables.Chain{Table: t, Name: "egress"},
		ing: &nftables.Chain{Table: t, Name: "ingress"},
		post: &nftables.Chain{Table: t, Name: "postrouting", Type: nftables.ChainTypeNAT, Hooknum: nftables.ChainHookPostrouting,
			Priority: nftables.ChainPriorityNATSource, Policy: &accept},
	}
}

// Invalidate makes the next Sync replace the whole table: what the kernel
// holds may no longer be what was written (the periodic resync, or someone
// else touched the table). Safe to call from any goroutine.
func (s *Syncer) Invalidate() { s.stale.Store(true) }

// Sync applies d: the whole table when the kernel's state is unknown,
// otherwise only the difference from the last sync.
func (s *Syncer) Sync(d *Desired) error {
	var err error
	if s.stale.Swap(false) || s.last == nil {
		err = s.replace(d)
	} else {
		err = s.incremental(d)
	}
	if err != nil {
		s.last = nil // next time, replace the table whole
		return err
	}
	s.last = d
	return nil
}

// replace swaps Petrel's table for a new one in one transaction. Nothing
// outside the table is touched, and at start-up nothing is flushed first.
// The transaction is encoded by txn straight into the buffer sent (the
// whole table can be hundreds of thousands of set elements).
func (s *Syncer) replace(d *Desired) error {
	exists := false
	switch _, err := s.conn.ListTableOfFamily(TableName, nftables.TableFamilyINet); {
	case err == nil:
		exists = true // replaced in the same transaction: no gap
	case !errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("look up table %s: %w", TableName, err)
	}
	w, err := s.encodeReplace(d, exists, s.seq)
	if err != nil {
		return err
	}
	if err := s.exchange(w); err != nil {
		return fmt.Errorf("replace table %s: %w", TableName, err)
	}
	s.log.Debug("nftables table replaced", "sets", len(d.Sets), "egress", len(d.Egress), "ingress", len(d.Ingress), "bytes", len(w.buf))
	return nil
}

// encodeReplace is the replace transaction: the table deleted (when it
// exists) and created again with its chains, sets and rules.
func (s *Syncer) encodeReplace(d *Desired, exists bool, seq uint32) (*txn, error) {
	t := s.table()
	w := newTxn(txnSize(d), seq)
	if exists {
		w.table(unix.NFT_MSG_DELTABLE, 0, TableName)
	}
	w.table(unix.NFT_MSG_NEWTABLE, unix.NLM_F_CREATE, TableName)
	c := s.chains(t)
	for _, ch := range []*nftables.Chain{c.fwd, c.in, c.eg, c.ing, c.post} {
		w.chain(ch)
	}
	sets := map[string]*nftables.Set{}
	for i, name := range sortedNames(d.Sets) {
		ns := nfSet(t, d.Sets[name])
		ns.ID = uint32(i + 1) // lookups in this transaction find the set by it
		w.set(ns, d.Sets[name])
		sets[name] = ns
	}
	for _, r := range replaceRules(t, c, d, sets) {
		what := "rule in chain " + r.Chain.Name
		if owner := ruleOwner(r); owner != "" {
			what += " of " + owner
		}
		if err := w.rule(r, what); err != nil {
			return nil, fmt.Errorf("rule in chain %s: %w", r.Chain.Name, err)
		}
	}
	return w, nil
}

// replaceRules are every rule of the table, in order.
func replaceRules(t *nftables.Table, c chains, d *Desired, sets map[string]*nftables.Set) []*nftables.Rule {
	rules := baseRules(t, c.fwd, c.in, c.eg, c.ing)
	for _, chain := range []struct {
		c  *nftables.Chain
		st []Stmt
	}{{c.eg, d.Egress}, {c.ing, d.Ingress}} {
		for _, st := range chain.st {
			rules = append(rules, &nftables.Rule{Table: t, Chain: chain.c, Exprs: stmtExprs(st, sets), UserData: tag(stmtTag(st))})
		}
	}
	if d.Masquerade {
		rules = append(rules, masqRules(t, c.post, sets)...)
	}
	return rules
}

// elemsPerMessage keeps each set-element message's list under the 64 KiB
// a netlink attribute can measure (at most 68 bytes an element here, two
// for an address range): a longer list's length wrapped around, and the
// kernel refused the whole transaction (a set of 1,400 scattered IPv4
// pods was enough).
const elemsPerMessage = 512

// addSet creates a set with its elements.
func (s *Syncer) addSet(ns *nftables.Set, set *Set) error {
	if err := s.conn.AddSet(ns, nil); err != nil {
		return err
	}
	return inMessages(set.Kind, set.Elems, ns, s.conn.SetAddElements)
}

// inMessages adds or deletes elements of a set, elemsPerMessage at a time.
func inMessages(kind SetKind, elems []Elem, ns *nftables.Set, op func(*nftables.Set, []nftables.SetElement) error) error {
	var errs []error
	for len(elems) > 0 {
		n := min(len(elems), elemsPerMessage)
		errs = append(errs, op(ns, elements(&Set{Kind: kind, Elems: elems[:n]})))
		elems = elems[n:]
	}
	return errors.Join(errs...)
}

func stmtTag(st Stmt) string {
	if st.Owner == "" && st.Verdict == Drop {
		return dropTag
	}
	return st.Owner
}

func sortedNames(m map[string]*Set) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// incremental changes set elements, and the rules of policies whose rules
// changed; a pod added or relabelled touches only set elements.
func (s *Syncer) incremental(d *Desired) error {
	if d.Masquerade != s.last.Masquerade {
		return s.replace(d)
	}
	t := s.table()
	c := s.chains(t)
	sets := map[string]*nftables.Set{}
	var errs []error
	for _, name := range sortedNames(d.Sets) {
		want := d.Sets[name]
		ns := nfSet(t, want)
		sets[name] = ns
		old, ok := s.last.Sets[name]
		if old == want {
			continue // the compiler reused it: unchanged
		}
		if !ok {
			errs = append(errs, s.addSet(ns, want))
			continue
		}
		add, del := diffElems(old, want)
		if len(del) > 0 {
			errs = append(errs, inMessages(want.Kind, del, ns, s.conn.SetDeleteElements))
		}
		if len(add) > 0 {
			errs = append(errs, inMessages(want.Kind, add, ns, s.conn.SetAddElements))
		}
	}
	for _, chain := range []struct {
		c         *nftables.Chain
		old, want []Stmt
	}{{c.eg, s.last.Egress, d.Egress}, {c.ing, s.last.Ingress, d.Ingress}} {
		errs = append(errs, s.rules(t, chain.c, chain.old, chain.want, sets))
	}
	for name, old := range s.last.Sets {
		if _, ok := d.Sets[name]; !ok {
			s.conn.DelSet(nfSet(t, old))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if err := s.conn.Flush(); err != nil {
		return fmt.Errorf("update table %s: %w", TableName, err)
	}
	return nil
}

// rules replaces the rules of every policy whose statements changed,
// inserting the new ones before the chain's final drop.
func (s *Syncer) rules(t *nftables.Table, c *nftables.Chain, old, want []Stmt, sets map[string]*nftables.Set) error {
	changed := changedOwners(old, want)
	if len(changed) == 0 {
		return nil
	}
	have, err := s.conn.GetRules(t, c)
	if err != nil {
		return fmt.Errorf("list chain %s: %w", c.Name, err)
	}
	var drop uint64
	for _, r := range have {
		switch owner := ruleOwner(r); {
		case owner == dropTag:
			drop = r.Handle
		case changed[owner]:
			if err := s.conn.DelRule(r); err != nil {
				return err
			}
		}
	}
	if drop == 0 {
		return fmt.Errorf("chain %s has lost its final drop rule", c.Name)
	}
	for _, st := range want {
		if st.Owner != "" && changed[st.Owner] {
			s.conn.InsertRule(&nftables.Rule{Table: t, Chain: c, Position: drop, Exprs: stmtExprs(st, sets), UserData: tag(st.Owner)})
		}
	}
	return nil
}

func changedOwners(old, want []Stmt) map[string]bool {
	group := func(sts []Stmt) map[string][]Stmt {
		m := map[string][]Stmt{}
		for _, st := range sts {
			if st.Owner != "" {
				m[st.Owner] = append(m[st.Owner], st)
			}
		}
		return m
	}
	o, w := group(old), group(want)
	out := map[string]bool{}
	for k, v := range o {
		if !slices.EqualFunc(v, w[k], sameStmt) {
			out[k] = true
		}
	}
	for k := range w {
		if _, ok := o[k]; !ok {
			out[k] = true
		}
	}
	return out
}

func sameStmt(a, b Stmt) bool {
	return a.Owner == b.Owner && a.Family == b.Family && a.Verdict == b.Verdict && slices.Equal(a.Matches, b.Matches)
}

func diffElems(old, want *Set) (add, del []Elem) {
	in := func(s []Elem, e Elem) bool {
		_, ok := slices.BinarySearchFunc(s, e, compareElem)
		return ok
	}
	for _, e := range want.Elems {
		if !in(old.Elems, e) {
			add = append(add, e)
		}
	}
	for _, e := range old.Elems {
		if !in(want.Elems, e) {
			del = append(del, e)
		}
	}
	return add, del
}

// Remove deletes Petrel's table, if there is one: for uninstalling.
func (s *Syncer) Remove() error {
	if _, err := s.conn.ListTableOfFamily(TableName, nftables.TableFamilyINet); errors.Is(err, syscall.ENOENT) {
		return nil // no table
	} else if err != nil {
		return fmt.Errorf("look up table %s: %w", TableName, err)
	}
	s.conn.DelTable(s.table())
	s.last = nil
	return s.conn.Flush()
}
