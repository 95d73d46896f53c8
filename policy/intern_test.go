package policy

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
)

// TestCompilerSharesEqualSets: policies that select the same pods share
// one copy of the elements; a copy goes when the last policy using it
// does; the output equals Compile's throughout.
func TestCompilerSharesEqualSets(t *testing.T) {
	in := bigCluster(2000, 200) // policy j and j+100 select the same app
	k := NewCompiler()
	d := k.Compile(in)
	if !sameDesired(d, Compile(in)) {
		t.Fatal("output differs from Compile's")
	}
	a, b := setID(in.Policies[3]), setID(in.Policies[103])
	out := func(p Policy) *Desired { return k.entries[p.Namespace+"/"+p.Name].out }
	sa, sb := out(in.Policies[3]).Sets[a+"-in0-src-4"], out(in.Policies[103]).Sets[b+"-in0-src-4"]
	if sa == nil || sb == nil || len(sa.Elems) == 0 {
		t.Fatalf("sets %v %v", sa, sb)
	}
	if &sa.Elems[0] != &sb.Elems[0] {
		t.Error("two policies admitting the same peers keep two copies of them")
	}
	full := k.shared.kept()

	half := in
	half.Policies = in.Policies[:100] // one policy per app left
	d = k.Compile(half)
	if !sameDesired(d, Compile(half)) {
		t.Fatal("output differs from Compile's after policies were removed")
	}
	if got := k.shared.kept(); got != full {
		t.Errorf("%d element lists kept after removing the duplicates, want the same %d", got, full)
	}
	half.Policies = in.Policies[:50]
	k.Compile(half)
	if got := k.shared.kept(); got >= full || got == 0 {
		t.Errorf("%d element lists kept for half the apps, %d for all of them", got, full)
	}
	half.Policies = nil
	k.Compile(half)
	if got := k.shared.kept(); got != 0 {
		t.Errorf("%d element lists kept with no policy", got)
	}
	d = k.Compile(in)
	if !sameDesired(d, Compile(in)) || k.shared.kept() != full {
		t.Errorf("after everything came back: %d element lists kept, want %d", k.shared.kept(), full)
	}
}

// sameDesired compares compiled outputs: the same sets with the same
// elements (an empty list however built), the same statements.
func sameDesired(a, b *Desired) bool {
	if len(a.Sets) != len(b.Sets) || a.Masquerade != b.Masquerade ||
		!reflect.DeepEqual(a.Egress, b.Egress) || !reflect.DeepEqual(a.Ingress, b.Ingress) {
		return false
	}
	for name, s := range a.Sets {
		o := b.Sets[name]
		if o == nil || o.Kind != s.Kind || o.Family != s.Family || !slices.Equal(o.Elems, s.Elems) {
			return false
		}
	}
	return true
}

// TestEqualSetsProgrammedOnce: of equal sets, the kernel gets one, and
// every statement that needed any of them looks it up; when a member
// diverges it gets its own set back.
func TestEqualSetsProgrammedOnce(t *testing.T) {
	in := bigCluster(2000, 200) // policy j and j+100 select the same app and peers
	d := Compile(in)
	a, b := setID(in.Policies[3]), setID(in.Policies[103])
	keep, drop := min(a, b)+"-in0-src-4", max(a, b)+"-in0-src-4"
	if d.Sets[keep] == nil || d.Sets[drop] != nil {
		t.Fatalf("sets %s %v, %s %v: want the first only", keep, d.Sets[keep] != nil, drop, d.Sets[drop] != nil)
	}
	uses := func(d *Desired, p Policy, set string) bool {
		for _, st := range d.Ingress {
			if st.Owner == p.Namespace+"/"+p.Name && slices.ContainsFunc(st.Matches, func(m Match) bool { return m.Set == set }) {
				return true
			}
		}
		return false
	}
	if !uses(d, in.Policies[3], keep) || !uses(d, in.Policies[103], keep) {
		t.Errorf("both policies should look up %s", keep)
	}
	sets, distinct := 0, map[string]bool{}
	for name, s := range d.Sets {
		if !slices.Contains(globalSets, name) {
			sets++
			distinct[fmt.Sprint(s.Kind, s.Family, s.Elems)] = true
		}
	}
	if len(distinct) != sets {
		t.Errorf("%d policy sets, %d distinct", sets, len(distinct))
	}
	for _, st := range append(slices.Clone(d.Egress), d.Ingress...) {
		for _, m := range st.Matches {
			if d.Sets[m.Set] == nil {
				t.Fatalf("statement %s looks up a set that is not there", st)
			}
		}
	}

	// Policy 103 admits another app now: it diverges and gets its own set.
	changed := slices.Clone(in.Policies)
	p := changed[103]
	p.IngressRules = []Rule{{Peers: []Peer{ // a union no other policy admits
		{PodSelector: &Selector{MatchLabels: map[string]string{"app": "app50"}}, NamespaceSelector: &Selector{}},
		{PodSelector: &Selector{MatchLabels: map[string]string{"app": "app51"}}, NamespaceSelector: &Selector{}}},
		Ports: p.IngressRules[0].Ports}}
	changed[103] = p
	in.Policies = changed
	d = Compile(in)
	if !uses(d, in.Policies[103], b+"-in0-src-4") || d.Sets[b+"-in0-src-4"] == nil || d.Sets[a+"-in0-src-4"] == nil {
		t.Error("the diverged policy should look up a set of its own")
	}
}
