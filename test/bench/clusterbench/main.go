// Command clusterbench measures one Petrel route reflector against a
// simulated cluster: N nodes, each a pair of lightweight BGP sessions (bgp/sim;
// IPv4 and IPv6, each from its own address in one namespace) announcing
// that node's pod CIDRs, all clients of the reflector. It reports the time
// until every session is Established, until all 2N routes are in the
// reflector's kernel, until every node has every other node's CIDRs; the
// agent's CPU seconds and peak RSS; the time for one node's new CIDR to
// reach every other node; and a reflector restart (kill -9, start again)
// until every node has everything again.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/petrelnet/petrel/bgp/sim"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/procstat"
)

const asn = 64512

var dialConcurrency = 64

var keptDir string // KEEP=1: the agent's directory is left for reading

// profileDir: -profile; the first reflector writes CPU and heap profiles
// (stopped with SIGTERM after the CIDR change, not killed).
var profileDir string

var (
	rr4   = netip.MustParseAddr("10.200.0.1")
	rr6   = netip.MustParseAddr("fd00:200::1")
	pods4 = netip.MustParsePrefix("10.128.0.0/12")
	pods6 = netip.MustParsePrefix("fd00:128::/32")
)

// node i: addresses and pod CIDRs.
func addr4(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 200, byte(1 + i/250), byte(1 + i%250)})
}
func addr6(i int) netip.Addr {
	return netip.AddrFrom16([16]byte{0xfd, 0, 2, 0, 13: 1, 14: byte(i >> 8), 15: byte(i)})
}
func cidr4(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(128 + i/256), byte(i % 256), 0}), 24)
}
func cidr6(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom16([16]byte{0xfd, 0, 1, 0x28, 4: byte(i >> 8), 5: byte(i)}), 48)
}

func main() { os.Exit(run()) }

func run() int {
	agent := flag.String("agent", "bin/petrel-agent", "petrel-agent binary")
	sizes := flag.String("nodes", "100,1000", "simulated node counts")
	flag.IntVar(&dialConcurrency, "dial-concurrency", 64, "sessions opened at once")
	client := flag.Bool("client", true, "also measure one ordinary node behind two simulated reflectors")
	flag.StringVar(&profileDir, "profile", "", "write the first reflector's CPU and heap profiles (rr-<nodes>.cpu/.heap) into this directory; go tool pprof")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "clusterbench: needs root (network namespaces)")
		return 2
	}
	abs, _ := filepath.Abs(*agent)
	fmt.Println("One Petrel route reflector, N simulated nodes (an IPv4 and an IPv6 session each, one pod CIDR per family)")
	fmt.Println()
	fmt.Printf("%6s %12s %12s %12s %9s %9s %12s %12s\n", "nodes", "sessions up", "RR kernel", "all nodes", "CPU s", "peak RSS", "CIDR change", "RR restart")
	failed := false
	for _, s := range strings.Split(*sizes, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n < 2 || n > 5000 {
			fmt.Fprintf(os.Stderr, "clusterbench: bad node count %q (2-5000)\n", s)
			return 2
		}
		r, err := measure(n, abs)
		if err != nil && os.Getenv("KEEP") != "" {
			fmt.Fprintln(os.Stderr, "kept", keptDir)
		}
		if err != nil {
			fmt.Printf("%6d failed: %v\n", n, err)
			failed = true
			continue
		}
		fmt.Printf("%6d %12s %12s %12s %9.2f %6.1f MB %12s %12s\n", n, r.up.Round(time.Millisecond), r.kernel.Round(time.Millisecond),
			r.converged.Round(time.Millisecond), r.cpu, float64(r.rss)/1024, r.change.Round(time.Millisecond), r.restart.Round(time.Millisecond))
	}
	if *client {
		fmt.Println()
		fmt.Println("One ordinary Petrel node behind two simulated route reflectors passing on N nodes' pod CIDRs (each prefix learned twice)")
		fmt.Println()
		fmt.Printf("%6s %12s %12s %9s %9s %12s %22s\n", "nodes", "sessions up", "all routes", "CPU s", "peak RSS", "CIDR change", "one reflector gone")
		for _, s := range strings.Split(*sizes, ",") {
			n, _ := strconv.Atoi(s)
			r, err := measureClient(n, abs)
			if err != nil {
				fmt.Printf("%6d failed: %v\n", n, err)
				failed = true
				continue
			}
			kept := "every route kept"
			if !r.kept {
				kept, failed = "ROUTES LOST", true
			}
			fmt.Printf("%6d %12s %12s %9.2f %6.1f MB %12s %22s\n", n, r.up.Round(time.Millisecond), r.kernel.Round(time.Millisecond),
				r.cpu, float64(r.rss)/1024, r.change.Round(time.Millisecond), kept)
		}
	}
	if failed {
		return 1
	}
	return 0
}

type result struct {
	up, kernel, converged, change, restart time.Duration
	cpu                                    float64
	rss                                    int
}

type bench struct {
	n         int
	dir       string
	rr, sims  netnstest.NS
	agentBin  string
	agent     *labtest.Proc
	mu        sync.Mutex
	sessions  []*sim.Session // 2i: IPv4, 2i+1: IPv6
	cidrShift int            // node 0's CIDRs are moved by the change test
}

// setup makes the bench's directory and namespaces (the device under test
// in "<tag>", the simulated speakers in "sims"), wires them and counts the
// routes in the device's kernel; done undoes it all.
func setup(n int, agentBin, tag string) (b *bench, c4, c6 *labtest.RouteCounter, done func(), err error) {
	b = &bench{n: n, agentBin: agentBin}
	var undo []func()
	done = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	defer func() {
		if err != nil {
			done()
		}
	}()
	if b.dir, err = os.MkdirTemp("", "clusterbench"); err != nil {
		return
	}
	keptDir = b.dir
	undo = append(undo, func() {
		if os.Getenv("KEEP") == "" {
			os.RemoveAll(b.dir)
		}
	})
	prefix := fmt.Sprintf("%scb%d-", netnstest.Prefix, os.Getpid())
	if b.rr, err = netnstest.Create(prefix + tag); err != nil {
		return
	}
	undo = append(undo, func() { b.rr.Delete() })
	if b.sims, err = netnstest.Create(prefix + "sims"); err != nil {
		return
	}
	undo = append(undo, func() { b.sims.Delete() }, b.closeSessions)
	if err = b.wire(); err != nil {
		return
	}
	if c4, err = labtest.CountRoutes(b.rr, pods4, n); err != nil {
		return
	}
	undo = append(undo, c4.Close)
	if c6, err = labtest.CountRoutes(b.rr, pods6, n); err != nil {
		return
	}
	undo = append(undo, c6.Close)
	return b, c4, c6, done, nil
}

func measure(n int, agentBin string) (result, error) {
	var r result
	b, c4, c6, done, err := setup(n, agentBin, "rr")
	if err != nil {
		return r, err
	}
	defer done()
	start := time.Now()
	if err := b.startAgent(); err != nil {
		return r, err
	}
	defer func() { b.agent.Signal(syscall.SIGKILL) }()
	if err := b.dialAll(); err != nil {
		return r, err
	}
	r.up = time.Since(start)
	for _, c := range []*labtest.RouteCounter{c4, c6} {
		select {
		case <-c.Done:
		case err := <-c.Err:
			return r, err
		case <-time.After(b.limit(time.Minute)):
			return r, fmt.Errorf("the reflector's kernel did not get every node's routes within %v", b.limit(time.Minute))
		}
	}
	last := c4.Last
	if c6.Last.After(last) {
		last = c6.Last
	}
	r.kernel = last.Sub(start)
	if err := b.waitConverged(b.limit(2 * time.Minute)); err != nil {
		return r, err
	}
	r.converged = time.Since(start)
	r.cpu = procstat.CPUSeconds(b.agent.Cmd.Process.Pid)
	r.rss = procstat.PeakRSS(b.agent.Cmd.Process.Pid)

	// Node 0 gets new pod CIDRs: until every other node has them.
	t := time.Now()
	b.mu.Lock()
	old4, old6 := cidr4(0), cidr6(0)
	b.cidrShift = 1
	new4, new6 := b.cidr4(0), b.cidr6(0)
	s4, s6 := b.sessions[0], b.sessions[1]
	b.mu.Unlock()
	if err := s4.Announce([]netip.Prefix{new4}, []netip.Prefix{old4}); err != nil {
		return r, err
	}
	if err := s6.Announce([]netip.Prefix{new6}, []netip.Prefix{old6}); err != nil {
		return r, err
	}
	if err := b.waitConverged(b.limit(time.Minute)); err != nil {
		return r, fmt.Errorf("after node 0's CIDR change: %w", err)
	}
	r.change = time.Since(t)

	// The reflector killed and started again: every node reconnects (as
	// its speaker would) until every node has everything again.
	if profileDir != "" {
		b.agent.Signal(syscall.SIGTERM) // the agent writes its profiles as it stops
		for i := 0; i < 300 && b.agent.Running(); i++ {
			time.Sleep(100 * time.Millisecond)
		}
	}
	b.agent.Signal(syscall.SIGKILL)
	b.closeSessions()
	t = time.Now()
	if err := b.startAgent(); err != nil {
		return r, err
	}
	if err := b.dialAll(); err != nil {
		return r, err
	}
	if err := b.waitConverged(b.limit(2 * time.Minute)); err != nil {
		return r, fmt.Errorf("after the restart: %w", err)
	}
	r.restart = time.Since(t)
	return r, nil
}

// limit scales a wait sized for up to 1,000 nodes: the reflector's work
// grows with the square of the node count (every session is sent every
// node's route), and so may its time.
func (b *bench) limit(d time.Duration) time.Duration {
	if b.n <= 1000 {
		return d
	}
	return d * time.Duration(b.n) * time.Duration(b.n) / 1000 / 1000
}

func (b *bench) cidr4(i int) netip.Prefix {
	if i == 0 && b.cidrShift > 0 {
		return cidr4(b.n + 1)
	}
	return cidr4(i)
}

func (b *bench) cidr6(i int) netip.Prefix {
	if i == 0 && b.cidrShift > 0 {
		return cidr6(b.n + 1)
	}
	return cidr6(i)
}

// The two ends' link-layer addresses, fixed so the device's neighbour
// entries can be written before anything talks.
const rrMAC, simsMAC = "02:00:00:00:01:01", "02:00:00:00:01:02"

// wire links the two namespaces and gives the simulated nodes their
// addresses, in one ip -batch. The device under test gets a permanent
// neighbour entry for every simulated address: the kernel's neighbour
// table holds at most gc_thresh3 (1,024 by default, per family, for the
// whole machine) learned entries, and past that a node's ARP or ND entry
// is refused and its session never comes up ("neighbor table overflow");
// permanent entries are not counted. A reflector with that many clients
// on one link needs the same (docs/benchmarks.md).
func (b *bench) wire() error {
	var batch strings.Builder
	fmt.Fprintf(&batch, "link add eth0 address %s netns %s type veth peer name eth0 address %s netns %s\n", rrMAC, b.rr.Name, simsMAC, b.sims.Name)
	if err := runBatch(netnstest.NS{}, batch.String()); err != nil {
		return err
	}
	batch.Reset()
	fmt.Fprintf(&batch, "addr add %s/16 dev eth0\naddr add %s/64 dev eth0 nodad\nlink set eth0 up\nlink set lo up\n", rr4, rr6)
	for i := range b.n {
		fmt.Fprintf(&batch, "neigh replace %s lladdr %s dev eth0 nud permanent\nneigh replace %s lladdr %s dev eth0 nud permanent\n", addr4(i), simsMAC, addr6(i), simsMAC)
	}
	if err := runBatch(b.rr, batch.String()); err != nil {
		return err
	}
	batch.Reset()
	for i := range b.n {
		fmt.Fprintf(&batch, "addr add %s/16 dev eth0\naddr add %s/64 dev eth0 nodad\n", addr4(i), addr6(i))
	}
	batch.WriteString("link set eth0 up\nlink set lo up\n")
	return runBatch(b.sims, batch.String())
}

func runBatch(ns netnstest.NS, batch string) error {
	path := filepath.Join(os.TempDir(), fmt.Sprintf("clusterbench-%d.batch", os.Getpid()))
	if err := os.WriteFile(path, []byte(batch), 0o644); err != nil {
		return err
	}
	defer os.Remove(path)
	var out string
	var err error
	if ns.Name == "" {
		var b []byte
		b, err = execCommand("ip", "-batch", path)
		out = string(b)
	} else {
		out, err = ns.Run("ip", "-batch", path)
	}
	if err != nil {
		return fmt.Errorf("ip -batch: %v %s", err, out)
	}
	return nil
}

// startAgent runs the reflector: every simulated node a client.
func (b *bench) startAgent() error {
	var peers strings.Builder
	for i := range b.n {
		for _, a := range []netip.Addr{addr4(i), addr6(i)} {
			fmt.Fprintf(&peers, "  - {address: %s, asn: %d, routeReflectorClient: true, holdTime: 90s, keepaliveTime: 30s, connectRetry: 30s}\n", a, asn)
		}
	}
	return b.start("rr", "routeReflector: true\n", peers.String())
}

// start writes the agent's config (node name, extra keys, peers) and
// starts it in the device's namespace.
func (b *bench) start(name, extra, peers string) error {
	conf := fmt.Sprintf(`nodeName: %[7]s
routerID: %[1]s
asn: %[2]d
podCIDRs: [10.127.0.0/24, fd00:127::/64]
clusterCIDRs: [10.127.0.0/16, %[3]s, fd00:127::/48, %[4]s]
dataDir: %[5]s/data
cniConfDir: %[5]s/net.d
grpcAddress: unix://%[5]s/gobgp.sock
logLevel: warn
%[8]speers:
%[6]s`, rr4, asn, pods4, pods6, b.dir, peers, name, extra)
	path := filepath.Join(b.dir, "agent.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	args := []string{"--config", path}
	if profileDir != "" && name == "rr" && b.agent == nil {
		prof, _ := filepath.Abs(filepath.Join(profileDir, fmt.Sprintf("rr-%d", b.n)))
		os.MkdirAll(profileDir, 0o755)
		args = append(args, "--cpuprofile", prof+".cpu", "--memprofile", prof+".heap")
	}
	p, err := labtest.StartProc(b.rr, filepath.Join(b.dir, "agent.log"), b.agentBin, args...)
	if err != nil {
		return err
	}
	b.agent = p
	return nil
}

// dialAll opens every node's two sessions, 64 at a time, retrying until
// the reflector listens.
func (b *bench) dialAll() error {
	b.mu.Lock()
	b.sessions = make([]*sim.Session, 2*b.n)
	b.mu.Unlock()
	sem := make(chan struct{}, dialConcurrency)
	errs := make(chan error, 2*b.n)
	var wg sync.WaitGroup
	for i := range b.n {
		for fam, addrs := range [][2]netip.Addr{{addr4(i), rr4}, {addr6(i), rr6}} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sem <- struct{}{}
				defer func() { <-sem }()
				cidr := b.cidr4(i)
				if fam == 1 {
					cidr = b.cidr6(i)
				}
				s, err := b.dial(addrs[0], addrs[1], addr4(i), cidr)
				if err != nil {
					errs <- err
					return
				}
				b.mu.Lock()
				b.sessions[2*i+fam] = s
				b.mu.Unlock()
			}()
		}
	}
	wg.Wait()
	close(errs)
	return <-errs
}

func (b *bench) dial(local, remote, id netip.Addr, cidrs ...netip.Prefix) (*sim.Session, error) {
	deadline := time.Now().Add(b.limit(2 * time.Minute))
	for {
		var conn net.Conn
		err := b.sims.Do(func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: local.AsSlice()}, Timeout: 5 * time.Second}
			var err error
			conn, err = d.DialContext(context.Background(), "tcp", netip.AddrPortFrom(remote, 179).String())
			return err
		})
		if err == nil {
			s, err := sim.Start(conn, asn, id, 90*time.Second, cidrs)
			if err == nil {
				return s, nil
			}
			conn.Close()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("session %s: %w", local, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitConverged waits until every session has every other node's CIDR of
// its family and the reflector's own.
func (b *bench) waitConverged(limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		b.mu.Lock()
		sessions := b.sessions
		b.mu.Unlock()
		missing, example := 0, ""
		for i, s := range sessions {
			got, err := s.Routes()
			if err != nil {
				return fmt.Errorf("session %s: %w", s.Local, err)
			}
			if got != b.n || !b.hasAll(i, s) {
				missing++
				example = fmt.Sprintf("%s has %d routes of %d%s", s.Local, got, b.n, b.firstMissing(i, s))
			}
		}
		if missing == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d sessions still miss routes (%s)", missing, len(sessions), example)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// hasAll checks the CIDRs themselves: node 0's (moved by the change test),
// and the one of the node after i.
func (b *bench) hasAll(i int, s *sim.Session) bool {
	node, fam := i/2, i%2
	other := (node + 1) % b.n
	want := []netip.Prefix{b.cidr4(0), b.cidr4(other)}
	if fam == 1 {
		want = []netip.Prefix{b.cidr6(0), b.cidr6(other)}
	}
	for j, p := range want {
		if j == 0 && node == 0 {
			continue
		}
		if !s.Has(p, netip.Addr{}) {
			return false
		}
	}
	return true
}

func (b *bench) closeSessions() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, s := range b.sessions {
		if s != nil {
			s.Close()
		}
	}
	b.sessions = nil
}

// firstMissing names a node CIDR session i lacks, for the error message.
func (b *bench) firstMissing(i int, s *sim.Session) string {
	for j := range b.n {
		p := b.cidr4(j)
		if i%2 == 1 {
			p = b.cidr6(j)
		}
		if j != i/2 && !s.Has(p, netip.Addr{}) {
			return fmt.Sprintf(", first missing %s of node %d", p, j)
		}
	}
	return ""
}
