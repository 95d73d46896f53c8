package policy

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
)

// bigCluster is the shape of the policy benchmark: pods over 50 namespaces
// and 100 apps, each policy admitting one app from the next, whose pods are
// in the namespaces its namespace selector picks.
func bigCluster(pods, pols int) Input {
	var in Input
	for i := range 50 {
		in.Namespaces = append(in.Namespaces, Namespace{Name: fmt.Sprintf("ns%d", i), Labels: map[string]string{"tier": fmt.Sprint(i % 5)}})
	}
	ports := []NamedPort{{Name: "http", Protocol: TCP, Port: 8080}}
	for i := range pods {
		in.Pods = append(in.Pods, Pod{Namespace: fmt.Sprintf("ns%d", i%50), Name: fmt.Sprintf("p%d", i),
			Labels: map[string]string{"app": fmt.Sprintf("app%d", i%100)}, IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)})}, Ports: ports})
	}
	for j := range pols {
		in.Policies = append(in.Policies, Policy{Namespace: fmt.Sprintf("ns%d", j%50), Name: fmt.Sprintf("pol%d", j),
			PodSelector: Selector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", j%100)}}, Ingress: true,
			IngressRules: []Rule{{
				Peers: []Peer{{NamespaceSelector: &Selector{MatchLabels: map[string]string{"tier": fmt.Sprint((j + 1) % 5)}},
					PodSelector: &Selector{MatchLabels: map[string]string{"app": fmt.Sprintf("app%d", (j+1)%100)}}}},
				Ports: []Port{{Protocol: TCP, Name: "http"}, {Protocol: TCP, Number: 5201}},
			}}})
	}
	return in
}

func BenchmarkCompile10kPods1kPolicies(b *testing.B) {
	in := bigCluster(10000, 1000)
	for range b.N {
		Compile(in)
	}
}

// BenchmarkCompileAfterRelabel is the compile half of an incremental change:
// one pod relabelled, the cache warm.
func BenchmarkCompileAfterRelabel(b *testing.B) {
	in := bigCluster(10000, 1000)
	k := NewCompiler()
	k.Compile(in)
	b.ResetTimer()
	for i := range b.N {
		in.Pods[i%len(in.Pods)].Labels = map[string]string{"app": fmt.Sprintf("app%d", (i*7+3)%100)}
		k.Compile(in)
	}
}

// BenchmarkCompiledFootprint reports what a warm Compiler and its output
// keep in memory for the benchmark's cluster (MB-kept), and how many set
// elements the kernel gets: the agent holds this for as long as nothing
// changes. With 1,000 policies, ten select each app (their sets are
// equal); with 100, each app has one (nothing to share).
func BenchmarkCompiledFootprint(b *testing.B) {
	for _, pols := range []int{1000, 100} {
		b.Run(fmt.Sprintf("policies=%d", pols), func(b *testing.B) {
			in := bigCluster(10000, pols)
			var kept uint64
			elems := 0
			for range b.N {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				k := NewCompiler()
				d := k.Compile(in)
				runtime.GC()
				runtime.ReadMemStats(&after)
				kept = after.HeapAlloc - before.HeapAlloc
				elems = 0
				for _, s := range d.Sets {
					elems += len(s.Elems)
				}
				runtime.KeepAlive(k)
			}
			b.ReportMetric(float64(kept)/(1<<20), "MB-kept")
			b.ReportMetric(float64(elems), "elements")
		})
	}
}
