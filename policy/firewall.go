package policy

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"

	"github.com/google/nftables"
)

// Firewall compiles the policy input and applies it, and fails closed per
// policy: when the kernel refuses the table, the policies whose sets it
// refuses are found (each tried in a scratch table created and deleted in
// one transaction, which leaves the kernel as it was), and each is replaced
// by what it isolates with nothing allowed. Every other policy keeps being
// applied; the node never stays on a stale table or without one. If even
// that is refused, every policy is isolated the same way: a minimal table
// that only blocks.
type Firewall struct {
	syncer   *Syncer
	compiler *Compiler
	log      *slog.Logger
	// The input last applied and what was refused then: an unchanged input
	// is not compiled again while the kernel's table is trusted.
	lastIn      *Input
	lastRefused []Refusal
	// BreakForTest, when set, corrupts the compiled output before it is
	// applied, for tests of the refusal path (the compiler's own output is
	// always programmable).
	BreakForTest func(*Desired)
}

// Refusal is a policy the kernel refused, and why; its selected pods are
// isolated with nothing allowed.
type Refusal struct {
	Namespace, Name string
	Err             error
}

// NewFirewall applies through s.
func NewFirewall(s *Syncer, log *slog.Logger) *Firewall {
	return &Firewall{syncer: s, compiler: NewCompiler(), log: log}
}

// Invalidate makes the next Sync replace the whole table.
func (f *Firewall) Invalidate() { f.syncer.Invalidate() }

// Remove deletes Petrel's table.
func (f *Firewall) Remove() error { return f.syncer.Remove() }

func (f *Firewall) compile(in Input) *Desired { return f.broken(f.compiler.Compile(in)) }

// broken applies the test hook, if any.
func (f *Firewall) broken(d *Desired) *Desired {
	if f.BreakForTest != nil {
		f.BreakForTest(d)
	}
	return d
}

// Sync applies in. It returns the policies the kernel refused (applied as
// isolation only), and an error only when no table could be applied. An
// input equal to the last one applied costs nothing, unless the table was
// invalidated (the periodic resync, a change made by hand).
func (f *Firewall) Sync(in Input) ([]Refusal, error) {
	if f.lastIn != nil && !f.syncer.stale.Load() && f.syncer.last != nil && reflect.DeepEqual(in, *f.lastIn) {
		return f.lastRefused, nil
	}
	f.lastIn = nil
	refused, err := f.apply(in)
	if err == nil {
		f.lastIn, f.lastRefused = &in, refused
	}
	return refused, err
}

func (f *Firewall) apply(in Input) ([]Refusal, error) {
	err := f.syncer.Sync(f.compile(in))
	if err == nil {
		return nil, nil
	}
	refused := f.culprits(in)
	if len(refused) == 0 {
		// Not one policy's sets: the whole table is refused. Isolate all.
		for _, p := range in.Policies {
			refused = append(refused, Refusal{Namespace: p.Namespace, Name: p.Name, Err: err})
		}
	}
	if err2 := f.syncer.Sync(Compile(isolateOnly(in, refused))); err2 == nil {
		return refused, nil
	} else if len(refused) < len(in.Policies) {
		refused = nil
		for _, p := range in.Policies {
			refused = append(refused, Refusal{Namespace: p.Namespace, Name: p.Name, Err: err})
		}
		if err3 := f.syncer.Sync(Compile(isolateOnly(in, refused))); err3 == nil {
			return refused, nil
		}
	}
	return refused, fmt.Errorf("no table could be applied: %w", err)
}

// culprits are the policies whose own sets the kernel refuses.
func (f *Firewall) culprits(in Input) []Refusal {
	var out []Refusal
	for _, p := range in.Policies {
		one := in
		one.Policies = []Policy{p}
		d := f.broken(Compile(one)) // not through the cache: it would forget the others
		prefix := setID(p) + "-"
		var sets []*Set
		for name, s := range d.Sets {
			if strings.HasPrefix(name, prefix) {
				sets = append(sets, s)
			}
		}
		slices.SortFunc(sets, func(a, b *Set) int { return strings.Compare(a.Name, b.Name) })
		if err := f.syncer.probe(sets); err != nil {
			out = append(out, Refusal{Namespace: p.Namespace, Name: p.Name, Err: err})
		}
	}
	return out
}

// isolateOnly replaces each refused policy by one that selects the same
// pods in the same directions and allows nothing.
func isolateOnly(in Input, refused []Refusal) Input {
	bad := map[string]bool{}
	for _, r := range refused {
		bad[r.Namespace+"/"+r.Name] = true
	}
	out := in
	out.Policies = make([]Policy, 0, len(in.Policies))
	for _, p := range in.Policies {
		if bad[p.Namespace+"/"+p.Name] {
			p = Policy{Namespace: p.Namespace, Name: p.Name, PodSelector: p.PodSelector, Ingress: p.Ingress, Egress: p.Egress}
		}
		out.Policies = append(out.Policies, p)
	}
	return out
}

// probeTable is where sets are tried: created and deleted in the same
// transaction, so the kernel checks the elements and keeps nothing.
const probeTable = "petrel-probe"

// probe asks the kernel whether it accepts sets, without changing anything.
func (s *Syncer) probe(sets []*Set) error {
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: probeTable}
	s.conn.AddTable(t)
	var errs []error
	for _, set := range sets {
		errs = append(errs, s.addSet(nfSet(t, set), set))
	}
	s.conn.DelTable(t)
	if err := errors.Join(errs...); err != nil {
		_ = s.conn.Flush() // drop the queued messages
		return err
	}
	return s.conn.Flush()
}
