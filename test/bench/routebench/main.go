// Command routebench measures how fast BGP routes reach the kernel: a
// feeder speaker in its own namespace announces N distinct /26 prefixes to
// the device under test — petrel-agent, FRR bgpd+zebra, or BIRD 2 with its
// kernel protocol — each in an identical fresh namespace, all in one run.
// The clock starts when the feeder's session reaches Established (it sends
// its whole table right then) and stops when the DUT's kernel has announced
// the last of the N routes over netlink. Peak RSS is VmHWM of the DUT's
// processes.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/petrelnet/petrel/bgp"
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
	pods := flag.Int("pods", 0, "petrel-agent also polices this many local pods (and a tenth as many NetworkPolicies) from its policy directory; RSS is taken once routes and policy are both in place")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "routebench: needs root (network namespaces)")
		return 2
	}
	abs, _ := filepath.Abs(*agent)
	fmt.Printf("BGP route installation: feeder Established -> last prefix in the DUT's kernel\n\n")
	fmt.Printf("%-22s %9s %12s %14s\n", "device under test", "prefixes", "time", "peak RSS")
	failed := false
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 || n > 1<<17 {
			fmt.Fprintf(os.Stderr, "routebench: bad size %q (1-%d)\n", s, 1<<17)
			return 2
		}
		for _, dut := range strings.Split(*duts, ",") {
			prof := ""
			if *profile != "" && dut == "petrel" {
				os.MkdirAll(*profile, 0o755)
				prof, _ = filepath.Abs(filepath.Join(*profile, fmt.Sprintf("petrel-%d", n)))
			}
			withPods := 0
			if dut == "petrel" {
				withPods = *pods
			}
			name := label(dut)
			if withPods > 0 {
				name = fmt.Sprintf("%s + %d pods, %d policies", name, withPods, withPods/10)
			}
			d, rss, err := measure(dut, n, abs, prof, withPods)
			if err != nil {
				fmt.Printf("%-22s %9d %12s %14s  (%v)\n", name, n, "failed", "-", err)
				failed = true
				continue
			}
			fmt.Printf("%-22s %9d %10.0f ms %11.1f MB\n", name, n, float64(d.Microseconds())/1000, float64(rss)/1024)
		}
	}
	if failed {
		return 1
	}
	return 0
}

func label(dut string) string {
	return map[string]string{"petrel": "petrel-agent", "frr": "FRR 8 bgpd+zebra", "bird": "BIRD 2 (kernel proto)"}[dut]
}

// measure builds a fresh feeder/DUT pair, feeds n prefixes, and tears down.
func measure(dut string, n int, agentBin, profile string, pods int) (time.Duration, int, error) {
	dir, err := os.MkdirTemp("", "routebench")
	if err != nil {
		return 0, 0, err
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
		return 0, 0, err
	}
	defer feedNS.Delete()
	dutNS, err := netnstest.Create(prefix + "dut")
	if err != nil {
		return 0, 0, err
	}
	defer dutNS.Delete()
	if err := wire(feedNS, dutNS); err != nil {
		return 0, 0, err
	}
	counter, err := labtest.CountRoutes(dutNS, fed, n)
	if err != nil {
		return 0, 0, err
	}
	defer counter.Close()
	pids, stop, err := startDUT(dut, dutNS, dir, agentBin, profile, pods)
	if err != nil {
		return 0, 0, err
	}
	defer stop()
	start, stopFeeder, err := startFeeder(feedNS, n)
	if err != nil {
		return 0, 0, err
	}
	defer stopFeeder()
	select {
	case <-counter.Done:
	case err := <-counter.Err:
		return 0, 0, err
	case <-time.After(3 * time.Minute):
		return 0, 0, fmt.Errorf("routes did not all arrive within 3 minutes")
	}
	if pods > 0 {
		if err := readyz(dutNS); err != nil {
			return 0, 0, err
		}
	}
	rss := 0
	for _, pid := range pids() {
		rss += procstat.PeakRSS(pid)
	}
	return counter.Last.Sub(start), rss, nil
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
func startFeeder(ns netnstest.NS, n int) (time.Time, func(), error) {
	self, _ := os.Executable()
	cmd := exec.Command(self, "feeder", strconv.Itoa(n))
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

// feeder announces n /26 prefixes from 10.128.0.0/9 to 10.98.0.2. The
// paths go in before the peer, so they are the session's initial table.
func feeder(args []string) int {
	n, _ := strconv.Atoi(args[0])
	ctx := context.Background()
	poked := make(chan struct{}, 1)
	sp, err := bgp.New(ctx, bgp.Config{
		ASN: 65000, RouterID: netip.MustParseAddr("10.98.0.1"), ListenPort: 179,
		PodCIDRs: []netip.Prefix{fed}, ClusterCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")},
	}, slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})), bgp.Notify{Sessions: func() {
		select {
		case poked <- struct{}{}:
		default:
		}
	}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "feeder:", err)
		return 1
	}
	adverts := make([]netip.Prefix, n)
	base := fed.Addr().As4()
	for i := range n {
		v := uint32(base[0])<<24 | uint32(base[1])<<16 | uint32(i)<<6
		adverts[i] = netip.PrefixFrom(netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}), 26)
	}
	// FRR announces everything back (the feeder drops it as an AS loop,
	// after counting it): the feeder's prefix limit must not end the
	// session under it.
	peer := bgp.Peer{Address: netip.MustParseAddr("10.98.0.2"), ASN: 65001, ConnectRetry: time.Second, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second,
		MaxPrefixes: 1 << 20}
	if _, err := sp.Set(ctx, []bgp.Peer{peer}, bgp.Adverts{Prefixes: adverts}); err != nil {
		fmt.Fprintln(os.Stderr, "feeder:", err)
		return 1
	}
	for range poked {
		if sp.PeerStates()[peer.Address] == "established" {
			fmt.Printf("established %d\n", time.Now().UnixNano())
			break
		}
	}
	select {} // until killed
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
