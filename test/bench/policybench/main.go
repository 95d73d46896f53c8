// Command policybench measures Petrel's NetworkPolicy dataplane with 10,000
// pods and 1,000 policies in a throwaway namespace: the full sync, one pod
// added and one pod relabelled until the change is in the kernel (p50/p99
// over 100 changes), and TCP throughput between two real pods with those
// policies programmed against none.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/vishvananda/netns"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/policycases"
	"github.com/petrelnet/petrel/policy"
)

func main() { os.Exit(run()) }

func run() int {
	plugin := flag.String("plugin", "bin/petrel-cni", "Petrel's CNI binary, to wire the two real pods")
	pods := flag.Int("pods", 10000, "pods")
	pols := flag.Int("policies", 1000, "policies")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the change phases (after the full sync) to this file")
	memprofile := flag.String("memprofile", "", "write an allocation profile (heap, alloc_space) to this file at the end")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "policybench: needs root")
		return 2
	}
	b, err := setup(*plugin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "policybench:", err)
		return 1
	}
	defer b.cleanup()
	in := synthetic(*pods, *pols, b.a, b.b)
	start := time.Now()
	d := b.compiler.Compile(in)
	compile := time.Since(start)
	start = time.Now()
	if err := b.syncer.Sync(d); err != nil { // a new syncer replaces the table whole
		fmt.Fprintln(os.Stderr, "policybench: full sync:", err)
		return 1
	}
	full := time.Since(start)
	fmt.Printf("NetworkPolicy dataplane: %d pods, %d policies\n\n", len(in.Pods), len(in.Policies))
	fmt.Printf("%-34s %10s\n", "full sync: compile", ms(compile))
	fmt.Printf("%-34s %10s\n", "full sync: one nftables transaction", ms(full))
	if *cpuprofile != "" {
		stop, err := startProfile(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "policybench:", err)
			return 1
		}
		defer stop()
	}
	if *memprofile != "" {
		defer writeHeapProfile(*memprofile)
	}
	for _, kind := range []string{"pod add", "relabel", "policy change"} {
		lat, err := b.changes(in, kind, 100)
		if err != nil {
			fmt.Fprintln(os.Stderr, "policybench:", err)
			return 1
		}
		fmt.Printf("%-34s p50 %8s  p99 %8s\n", kind+" -> in kernel", ms(pct(lat, 50)), ms(pct(lat, 99)))
	}
	// The same changes the way Kubernetes mode meets them: API objects,
	// all translated afresh at every sync.
	objs := toObjects(in)
	if err := b.syncer.Sync(b.compiler.Compile(objs.translate())); err != nil {
		fmt.Fprintln(os.Stderr, "policybench:", err)
		return 1
	}
	for _, kind := range []string{"pod add", "relabel", "policy change"} {
		lat, err := b.changesViaAPI(objs, kind, 100)
		if err != nil {
			fmt.Fprintln(os.Stderr, "policybench:", err)
			return 1
		}
		fmt.Printf("%-34s p50 %8s  p99 %8s\n", kind+" (API objects) -> kernel", ms(pct(lat, 50)), ms(pct(lat, 99)))
	}
	with, err := b.iperf()
	if err != nil {
		fmt.Fprintln(os.Stderr, "policybench: iperf3:", err)
		return 1
	}
	if err := b.syncer.Sync(policy.Compile(policy.Input{})); err != nil {
		fmt.Fprintln(os.Stderr, "policybench:", err)
		return 1
	}
	without, err := b.iperf()
	if err != nil {
		fmt.Fprintln(os.Stderr, "policybench: iperf3:", err)
		return 1
	}
	fmt.Printf("%-34s %7.2f Gbit/s with, %.2f Gbit/s without, ratio %.2f\n", "TCP pod to pod (iperf3, 3 s)", with, without, with/without)
	return 0
}

// startProfile starts a CPU profile written to path; the returned func
// stops it.
func startProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}

// writeHeapProfile writes the heap profile, which carries every
// allocation since the start (go tool pprof -sample_index=alloc_space).
func writeHeapProfile(path string) {
	f, err := os.Create(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, "policybench:", err)
		return
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		fmt.Fprintln(os.Stderr, "policybench:", err)
	}
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

type bench struct {
	compiler *policy.Compiler
	node     netnstest.NS
	podNS    []netnstest.NS
	a, b     netip.Addr
	syncer   *policy.Syncer
	dir      string
}

func (b *bench) cleanup() {
	for _, p := range b.podNS {
		p.Delete()
	}
	b.node.Delete()
	os.RemoveAll(b.dir)
}

// setup makes a node with two real pods wired by the CNI plugin.
func setup(plugin string) (*bench, error) {
	b := &bench{compiler: policy.NewCompiler()}
	var err error
	b.dir, _ = os.MkdirTemp("", "policybench")
	prefix := fmt.Sprintf("%spb%d-", netnstest.Prefix, os.Getpid())
	if b.node, err = netnstest.Create(prefix + "node"); err != nil {
		return b, err
	}
	b.node.Run("ip", "link", "set", "lo", "up")
	conf := fmt.Sprintf(`{"cniVersion":"1.1.0","name":"petrel","type":"petrel","ipam":{"ranges":["10.250.0.0/24"],"dataDir":%q}}`, b.dir)
	for i := range 2 {
		p, err := netnstest.Create(fmt.Sprintf("%spod%d", prefix, i))
		if err != nil {
			return b, err
		}
		b.podNS = append(b.podNS, p)
		p.Run("ip", "link", "set", "lo", "up")
		cmd := exec.Command(plugin)
		cmd.Env = []string{"CNI_COMMAND=ADD", fmt.Sprintf("CNI_CONTAINERID=bench%d", i), "CNI_NETNS=" + p.Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + filepath.Dir(plugin)}
		cmd.Stdin = strings.NewReader(conf)
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := b.node.Start(cmd); err != nil {
			return b, err
		}
		if err := cmd.Wait(); err != nil {
			return b, fmt.Errorf("CNI ADD: %v %s", err, out.String())
		}
		var res struct{ IPs []struct{ Address string } }
		json.Unmarshal(out.Bytes(), &res)
		ip := netip.MustParsePrefix(res.IPs[0].Address).Addr()
		if i == 0 {
			b.a = ip
		} else {
			b.b = ip
		}
	}
	h, err := netns.GetFromName(b.node.Name)
	if err != nil {
		return b, err
	}
	b.syncer, err = policy.NewSyncer(h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	return b, err
}

// synthetic is policycases.Synthetic with the two real pods first: b is
// selected by policy 0, which admits a (app1, in ns1).
func synthetic(pods, pols int, a, b netip.Addr) policy.Input {
	in := policycases.Synthetic(pods-2, pols, netip.MustParseAddr("10.244.0.0"))
	ports := []policy.NamedPort{{Name: "http", Protocol: policy.TCP, Port: 8080}}
	in.Pods = append([]policy.Pod{
		{Namespace: "ns1", Name: "a", Labels: map[string]string{"app": "app1"}, IPs: []netip.Addr{a}, Ports: ports},
		{Namespace: "ns0", Name: "b", Labels: map[string]string{"app": "app0"}, IPs: []netip.Addr{b}, Ports: ports},
	}, in.Pods...)
	return in
}

// changes applies n pod additions, relabels or policy changes one at a time and times each
// from the change to the end of its (incremental) transaction.
func (b *bench) changes(in policy.Input, kind string, n int) ([]time.Duration, error) {
	var out []time.Duration
	for i := range n {
		start := time.Now()
		switch kind {
		case "pod add":
			in.Pods = append(in.Pods, policy.Pod{Namespace: "ns1", Name: fmt.Sprintf("new%d", i),
				Labels: map[string]string{"app": "app1"}, IPs: []netip.Addr{netip.AddrFrom4([4]byte{10, 245, 0, byte(i)})}})
		case "relabel":
			p := &in.Pods[2+i]
			p.Labels = map[string]string{"app": fmt.Sprintf("app%d", (i*7+3)%100)}
		default: // one policy admits another port: its rules and sets only
			in.Policies = slices.Clone(in.Policies)
			p := &in.Policies[(i*37)%len(in.Policies)]
			rule := p.IngressRules[0]
			rule.Ports = []policy.Port{{Protocol: policy.TCP, Name: "http"}, {Protocol: policy.TCP, Number: uint16(5201 + i)}}
			p.IngressRules = []policy.Rule{rule}
		}
		if err := b.syncer.Sync(b.compiler.Compile(in)); err != nil {
			return nil, fmt.Errorf("%s %d: %w", kind, i, err)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// iperf runs iperf3 from pod a to pod b for 3 s and returns Gbit/s.
func (b *bench) iperf() (float64, error) {
	srv := exec.Command("iperf3", "-s")
	if err := b.podNS[1].Start(srv); err != nil {
		return 0, err
	}
	defer func() { srv.Process.Kill(); srv.Wait() }()
	// iperf3 has no readiness signal: wait until its port accepts.
	if err := b.waitListening(net.JoinHostPort(b.b.String(), "5201")); err != nil {
		return 0, err
	}
	out, err := b.podNS[0].Run("iperf3", "-c", b.b.String(), "-t", "3", "-J")
	if err != nil {
		return 0, fmt.Errorf("%v: %s", err, out)
	}
	var res struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		return 0, err
	}
	return res.End.SumReceived.BitsPerSecond / 1e9, nil
}

func (b *bench) waitListening(addr string) error {
	for range 100 {
		var c net.Conn
		err := b.podNS[0].Do(func() (err error) { c, err = net.DialTimeout("tcp", addr, 100*time.Millisecond); return })
		if err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("iperf3 server at %s did not start listening", addr)
}
