package main

import (
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/petrelnet/petrel/bgp/sim"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/procstat"
)

// The two simulated reflectors of the client variant.
var reflectors = [][2]netip.Addr{
	{netip.MustParseAddr("10.200.255.1"), netip.MustParseAddr("fd00:200::ff:1")},
	{netip.MustParseAddr("10.200.255.2"), netip.MustParseAddr("fd00:200::ff:2")},
}

type clientResult struct {
	up, kernel, change time.Duration
	cpu                float64
	rss                int
	kept               bool
}

// measureClient is the other side of a large cluster: one ordinary Petrel
// node behind two route reflectors (simulated) that pass on every other
// node's pod CIDRs (next hop the node's own address), so the node learns
// each prefix twice. It measures sessions up, all routes in the node's
// kernel, CPU and peak RSS, one CIDR change, and whether the kernel keeps
// every route when one reflector goes away.
func measureClient(n int, agentBin string) (clientResult, error) {
	var r clientResult
	b, c4, c6, done, err := setup(n, agentBin, "node")
	if err != nil {
		return r, err
	}
	defer done()
	var batch strings.Builder
	for _, a := range reflectors {
		fmt.Fprintf(&batch, "addr add %s/16 dev eth0\naddr add %s/64 dev eth0 nodad\n", a[0], a[1])
	}
	if err := runBatch(b.sims, batch.String()); err != nil {
		return r, err
	}
	start := time.Now()
	if err := b.startClient(); err != nil {
		return r, err
	}
	defer func() { b.agent.Signal(syscall.SIGKILL) }()
	var sessions []*sim.Session // reflector k: 2k IPv4, 2k+1 IPv6
	for _, a := range reflectors {
		for fam, local := range a {
			remote := rr4
			if fam == 1 {
				remote = rr6
			}
			s, err := b.dial(local, remote, a[0])
			if err != nil {
				return r, err
			}
			sessions = append(sessions, s)
			b.sessions = append(b.sessions, s)
		}
	}
	r.up = time.Since(start)
	for k, s := range sessions {
		for i := range n {
			nh, cidr := addr4(i), cidr4(i)
			if k%2 == 1 {
				nh, cidr = addr6(i), cidr6(i)
			}
			if err := s.AnnounceVia(nh, []netip.Prefix{cidr}, nil); err != nil {
				return r, err
			}
		}
	}
	for _, c := range []*labtest.RouteCounter{c4, c6} {
		select {
		case <-c.Done:
		case err := <-c.Err:
			return r, err
		case <-time.After(2 * time.Minute):
			return r, errors.New("the node's kernel did not get every route within 2 minutes")
		}
	}
	last := c4.Last
	if c6.Last.After(last) {
		last = c6.Last
	}
	r.kernel = last.Sub(start)
	r.cpu = procstat.CPUSeconds(b.agent.Cmd.Process.Pid)
	r.rss = procstat.PeakRSS(b.agent.Cmd.Process.Pid)

	// Node 0's CIDRs move, on both reflectors.
	t := time.Now()
	moved4, moved6 := cidr4(n+1), cidr6(n+1)
	for k, s := range sessions {
		nh, add, del := addr4(0), moved4, cidr4(0)
		if k%2 == 1 {
			nh, add, del = addr6(0), moved6, cidr6(0)
		}
		if err := s.AnnounceVia(nh, []netip.Prefix{add}, []netip.Prefix{del}); err != nil {
			return r, err
		}
	}
	if err := waitKernel(b.rr, time.Minute, func(routes string) bool {
		return strings.Contains(routes, moved4.String()) && strings.Contains(routes, moved6.String()) &&
			!strings.Contains(routes, cidr4(0).String()+" ") && !strings.Contains(routes, cidr6(0).String()+" ")
	}); err != nil {
		return r, fmt.Errorf("node 0's CIDR change: %w", err)
	}
	r.change = time.Since(t)

	// One reflector goes away: the other still carries every route.
	sessions[0].Close()
	sessions[1].Close()
	if err := b.waitSessionsDown(reflectors[0][:], 30*time.Second); err != nil {
		return r, err
	}
	r.kept = waitKernel(b.rr, time.Second, func(routes string) bool { return countLines(routes) == 2*n }) == nil
	return r, nil
}

// waitSessionsDown waits until the node's speaker no longer counts its
// sessions with addrs as Established (the stock gobgp CLI on its socket).
func (b *bench) waitSessionsDown(addrs []netip.Addr, limit time.Duration) error {
	cli, err := exec.LookPath("gobgp")
	if err != nil {
		return fmt.Errorf("the gobgp CLI is not on PATH (test/setup.sh installs it into .tools/bin): %w", err)
	}
	deadline := time.Now().Add(limit)
	for {
		out, err := exec.Command(cli, "--target", "unix://"+filepath.Join(b.dir, "gobgp.sock"), "neighbor").CombinedOutput()
		if err != nil {
			return fmt.Errorf("gobgp neighbor: %v %s", err, out)
		}
		down := true
		for _, line := range strings.Split(string(out), "\n") {
			for _, a := range addrs {
				if f := strings.Fields(line); len(f) > 0 && f[0] == a.String() && strings.Contains(line, "Establ") {
					down = false
				}
			}
		}
		if down {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("sessions %v still Established after %s:\n%s", addrs, limit, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startClient runs the node: two reflectors as iBGP peers per family.
func (b *bench) startClient() error {
	var peers strings.Builder
	for _, a := range reflectors {
		for _, addr := range a {
			fmt.Fprintf(&peers, "  - {address: %s, asn: %d, holdTime: 90s, keepaliveTime: 30s, connectRetry: 30s}\n", addr, asn)
		}
	}
	return b.start("node", "", peers.String())
}

// waitKernel polls the node's routes inside the pod CIDRs (both
// families, one line each) until ok.
func waitKernel(ns netnstest.NS, limit time.Duration, ok func(routes string) bool) error {
	deadline := time.Now().Add(limit)
	for {
		var all strings.Builder
		for _, p := range []netip.Prefix{pods4, pods6} {
			fam := "-4"
			if p.Addr().Is6() {
				fam = "-6"
			}
			out, err := ns.Run("ip", fam, "route", "show", "root", p.String())
			if err != nil {
				return fmt.Errorf("ip route: %v %s", err, out)
			}
			all.WriteString(out)
		}
		if ok(all.String()) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %s; the node's routes:\n%s", limit, all.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countLines(s string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if strings.TrimSpace(l) != "" {
			n++
		}
	}
	return n
}
