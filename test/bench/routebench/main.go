// Command routebench measures how fast BGP routes reach the kernel: a
// feeder speaker in its own namespace announces N distinct /26 prefixes to
// the device under test — petrel-agent, FRR bgpd+zebra, or BIRD 2 with its
// kernel protocol — each in an identical fresh namespace, all in one run.
// The DUT runs for two seconds before the feeder connects; the clock starts
// when the feeder's session reaches Established (it sends its whole table
// right then, once) and stops when the DUT's kernel has announced the last
// of the N routes over netlink. Peak RSS is VmHWM of the DUT's processes.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/petrelnet/petrel/bgp/sim"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/procstat"
)

var fed = netip.MustParsePrefix("10.128.0.0/9")

func main() {
	if len(os.Args) > 1 && os.Args[1] == "feeder" {
		os.Exit(feeder(os.Args[2:]))
	}
	os.Exit(run())
}

func run() int {
	agent := flag.String("agent", "bin/petrel-agent", "petrel-agent binary")
	sizes := flag.String("sizes", "10000,100000", "prefix counts")
	duts := flag.String("duts", "petrel,frr,bird", "devices under test")
	profile := flag.String("profile", "", "write the agent's CPU and heap profiles into this directory (petrel-<prefixes>.cpu/.heap; go tool pprof)")
	single := flag.Bool("one-per-update", false, "the feeder sends each prefix in an UPDATE of its own (as routes with different attributes arrive) instead of packing them")
	runs := flag.Int("runs", 3, "runs per device and size; the median is reported")
	pods := flag.Int("pods", 0, "petrel-agent also polices this many local pods (and a tenth as many NetworkPolicies) from its policy directory; RSS is taken once routes and policy are both in place")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "routebench: needs root (network namespaces)")
		return 2
	}
	abs, _ := filepath.Abs(*agent)
	fmt.Printf("BGP route installation: feeder Established -> last prefix in the DUT's kernel\n")
	fmt.Printf("(median of %d runs, devices interleaved; peak RSS is VmHWM, \"code\" the part of it that maps the binary)\n\n", *runs)
	fmt.Printf("%-38s %9s %10s %17s %12s %10s %9s\n", "device under test", "prefixes", "time", "(min-max)", "first route", "peak RSS", "code")
	failed := false
	var ratios []string
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > 1<<17 {
			fmt.Fprintf(os.Stderr, "routebench: bad size %q (1-%d)\n", s, 1<<17)
			return 2
		}
		results := map[string][]result{}
		for round := range *runs {
			for _, dut := range strings.Split(*duts, ",") {
				prof := ""
				if *profile != "" && dut == "petrel" && round == 0 {
					os.MkdirAll(*profile, 0o755)
					prof, _ = filepath.Abs(filepath.Join(*profile, fmt.Sprintf("petrel-%d", n)))
				}
				withPods := 0
				if dut == "petrel" {
					withPods = *pods
				}
				r, err := measure(dut, n, abs, prof, withPods, *single)
				if err != nil {
					fmt.Printf("%-38s %9d %10s  (run %d: %v)\n", label(dut, withPods), n, "failed", round+1, err)
					failed = true
					continue
				}
				results[dut] = append(results[dut], r)
			}
		}
		med := map[string]result{}
		for _, dut := range strings.Split(*duts, ",") {
			rs := results[dut]
			if len(rs) == 0 {
				continue
			}
			m := median(rs)
			med[dut] = m
			withPods := 0
			if dut == "petrel" {
				withPods = *pods
			}
			lo, hi := spread(rs)
			code := "-"
			if m.fileKB > 0 {
				code = fmt.Sprintf("%.1f MB", float64(m.fileKB)/1024)
			}
			fmt.Printf("%-38s %9d %7.0f ms %17s %9.0f ms %7.1f MB %9s\n", label(dut, withPods), n, ms(m.took),
				fmt.Sprintf("(%.0f-%.0f ms)", ms(lo), ms(hi)), ms(m.first), float64(m.rssKB)/1024, code)
		}
		if p, ok := med["petrel"]; ok {
			line := fmt.Sprintf("%9d prefixes: peak RSS %.1f MB", n, float64(p.rssKB)/1024)
			if goal := rssGoal(n); goal > 0 && *pods == 0 {
				line += fmt.Sprintf(" (goal < %d MB: %s)", goal, verdict(float64(p.rssKB)/1024 < float64(goal)))
			}
			if f, ok := med["frr"]; ok {
				r := ms(p.took) / ms(f.took)
				line = fmt.Sprintf("%9d prefixes: time Petrel/FRR %.2f (goal <= 1.0: %s), RSS Petrel/FRR %.1f;", n, r, verdict(r <= 1.0),
					float64(p.rssKB)/float64(f.rssKB)) + strings.TrimPrefix(line, fmt.Sprintf("%9d prefixes:", n))
			}
			ratios = append(ratios, line)
		}
	}
	if len(ratios) > 0 {
		fmt.Printf("\n%s\n", strings.Join(ratios, "\n"))
	}
	if failed {
		return 1
	}
	return 0
}

// result is one measurement.
type result struct {
	took, first   time.Duration // the last route in, the first
	rssKB, fileKB int
}

// median is the run with the median time, with the median peak RSS.
func median(rs []result) result {
	byTime := slices.Clone(rs)
	slices.SortFunc(byTime, func(a, b result) int { return int(a.took - b.took) })
	m := byTime[len(byTime)/2]
	rss := make([]int, len(rs))
	for i, r := range rs {
		rss[i] = r.rssKB
	}
	slices.Sort(rss)
	m.rssKB = rss[len(rss)/2]
	return m
}

func spread(rs []result) (lo, hi time.Duration) {
	lo, hi = rs[0].took, rs[0].took
	for _, r := range rs {
		lo, hi = min(lo, r.took), max(hi, r.took)
	}
	return lo, hi
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// rssGoal is the peak RSS goal at n prefixes (MB), 0 for none.
func rssGoal(n int) int {
	switch n {
	case 20000:
		return 100
	case 100000:
		return 200
	}
	return 0
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT MET"
}

func label(dut string, pods int) string {
	name := map[string]string{"petrel": "petrel-agent", "frr": "FRR 8 bgpd+zebra", "bird": "BIRD 2 (kernel proto)"}[dut]
	if pods > 0 {
		name = fmt.Sprintf("%s + %d pods, %d policies", name, pods, pods/10)
	}
	return name
}

// settle is how long the DUT runs before the feeder connects.
const settle = 2 * time.Second

// measure builds a fresh feeder/DUT pair, feeds n prefixes, and tears down.
func measure(dut string, n int, agentBin, profile string, pods int, single bool) (result, error) {
	dir, err := os.MkdirTemp("", "routebench")
	if err != nil {
		return result{}, err
	}
	defer func() {
		if os.Getenv("KEEP") == "" {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintln(os.Stderr, "kept", dir)
		}
	}()
	os.Chmod(dir, 0o755) // FRR's daemons run as frr
	prefix := fmt.Sprintf("%srb%d-", netnstest.Prefix, os.Getpid())
	feedNS, err := netnstest.Create(prefix + "feeder")
	if err != nil {
		return result{}, err
	}
	defer feedNS.Delete()
	dutNS, err := netnstest.Create(prefix + "dut")
	if err != nil {
		return result{}, err
	}
	defer dutNS.Delete()
	if err := wire(feedNS, dutNS); err != nil {
		return result{}, err
	}
	counter, err := labtest.CountRoutes(dutNS, fed, n)
	if err != nil {
		return result{}, err
	}
	defer counter.Close()
	pids, stop, err := startDUT(dut, dutNS, dir, agentBin, profile, pods)
	if err != nil {
		return result{}, err
	}
	defer stop()
	// A running router is measured, not one starting: FRR's zebra, just
	// started, does not yet resolve the feeder's next hop, and bgpd holds
	// every route as unresolved until it does (half a second and more).
	// With pods, the agent starting is the point: its first policy
	// compile and the flood of routes overlap, as when an agent restarts
	// on a busy node.
	if pods == 0 {
		time.Sleep(settle)
	}
	start, stopFeeder, err := startFeeder(feedNS, n, single)
	if err != nil {
		return result{}, err
	}
	defer stopFeeder()
	select {
	case <-counter.Done:
	case err := <-counter.Err:
		return result{}, err
	case <-time.After(3 * time.Minute):
		return result{}, fmt.Errorf("routes did not all arrive within 3 minutes")
	}
	if pods > 0 {
		if err := readyz(dutNS); err != nil {
			return result{}, err
		}
	}
	r := result{took: counter.Last.Sub(start), first: counter.First.Sub(start)}
	for _, pid := range pids() {
		r.rssKB += procstat.PeakRSS(pid)
		if dut == "petrel" {
			r.fileKB += procstat.FileRSS(pid)
		}
	}
	if profile != "" {
		stop() // before the feeder goes: the heap profile is of a full table
	}
	return r, nil
}

func wire(feed, dut netnstest.NS) error {
	steps := []struct {
		ns   netnstest.NS
		args []string
	}{
		{netnstest.NS{}, []string{"link", "add", "eth0", "netns", feed.Name, "type", "veth", "peer", "name", "eth0", "netns", dut.Name}},
		{feed, []string{"addr", "add", "10.98.0.1/24", "dev", "eth0"}},
		{dut, []string{"addr", "add", "10.98.0.2/24", "dev", "eth0"}},
	}
	for _, ns := range []netnstest.NS{feed, dut} {
		steps = append(steps, struct {
			ns   netnstest.NS
			args []string
		}{ns, []string{"link", "set", "eth0", "up"}}, struct {
			ns   netnstest.NS
			args []string
		}{ns, []string{"link", "set", "lo", "up"}})
	}
	for _, s := range steps {
		var out []byte
		var err error
		if s.ns.Name == "" {
			out, err = exec.Command("ip", s.args...).CombinedOutput()
		} else {
			var o string
			o, err = s.ns.Run("ip", s.args...)
			out = []byte(o)
		}
		if err != nil {
			return fmt.Errorf("ip %v: %v %s", s.args, err, out)
		}
	}
	return nil
}

// startFeeder re-runs this binary as the feeder inside its namespace and
// returns the moment its session became Established.
func startFeeder(ns netnstest.NS, n int, single bool) (time.Time, func(), error) {
	self, _ := os.Executable()
	cmd := exec.Command(self, "feeder", strconv.Itoa(n), strconv.FormatBool(single))
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := ns.Start(cmd); err != nil {
		return time.Time{}, nil, err
	}
	stop := func() { cmd.Process.Kill(); cmd.Wait() }
	line, err := bufio.NewReader(stdout).ReadString('\n')
	ns_, perr := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "established ")), 10, 64)
	if err != nil || perr != nil {
		stop()
		return time.Time{}, nil, fmt.Errorf("feeder: %q %v %v", line, err, perr)
	}
	return time.Unix(0, ns_), stop, nil
}

// feeder announces n /26 prefixes from 10.128.0.0/9 to 10.98.0.2 as a
// router sends its table: once, right after the session is Established,
// packed into full UPDATEs (all share their attributes), or with single
// set each prefix in an UPDATE of its own, as routes with different
// attributes arrive. A minimal speaker (bgp/sim): a feeder built on
// Petrel's own speaker sent the table twice (Petrel re-sends its table to
// every new session, see bgp/resend.go), which measured the DUTs on a
// duplicate of every route.
func feeder(args []string) int {
	n, _ := strconv.Atoi(args[0])
	single, _ := strconv.ParseBool(args[1])
	// Until the DUT takes the session: an agent still starting listens
	// before it knows its peers, and closes the connection.
	var s *sim.Session
	var err error
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		var conn net.Conn
		if conn, err = net.DialTimeout("tcp", "10.98.0.2:179", time.Second); err != nil {
			continue
		}
		if s, err = sim.Start(conn, 65000, netip.MustParseAddr("10.98.0.1"), 9*time.Second, nil); err == nil {
			break
		}
		conn.Close()
	}
	if s == nil {
		fmt.Fprintln(os.Stderr, "feeder:", err)
		return 1
	}
	fmt.Printf("established %d\n", time.Now().UnixNano())
	perUpdate := packed
	if single {
		perUpdate = 1
	}
	for chunk := range slices.Chunk(fedPrefixes(n), perUpdate) {
		if err := s.Announce(chunk, nil); err != nil {
			fmt.Fprintln(os.Stderr, "feeder:", err)
			return 1
		}
	}
	select {} // until killed
}

// packed is how many /26 prefixes fill an UPDATE: 19 bytes of header, 4
// of lengths, 20 of attributes (ORIGIN, a one-AS AS_PATH, NEXT_HOP) and 5
// bytes a prefix stay within BGP's 4,096.
const packed = 800

// fedPrefixes are n distinct /26 prefixes of fed.
func fedPrefixes(n int) []netip.Prefix {
	out := make([]netip.Prefix, n)
	base := fed.Addr().As4()
	for i := range n {
		v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(i)<<6
		out[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 26)
	}
	return out
}

// readyz waits until the agent's /readyz answers 200: routes, CNI config,
// policy and announcements all in place.
func readyz(ns netnstest.NS) error {
	// The transport dials on goroutines of its own: each dial enters ns.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = ns.Do(func() error { c, err = (&net.Dialer{}).DialContext(ctx, network, addr); return err })
			return c, err
		}}}
	var last string
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		resp, err := client.Get("http://127.0.0.1:9465/readyz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("%s: %s", resp.Status, strings.TrimSpace(string(b)))
		}
		last = err.Error()
	}
	return fmt.Errorf("the agent's /readyz not 200 within 3 minutes: %s", last)
}
