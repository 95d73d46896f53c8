package policy

import (
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
	sa, sb := d.Sets[a+"-in0-src-4"], d.Sets[b+"-in0-src-4"]
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
