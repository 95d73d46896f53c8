package labtest

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

// The second ToR of topology (b): the same AS as the first (a spine
// layer's pair), every node dual-homed to it over eth2 (node
// 10.96.<i>.2/24, ToR 10.96.<i>.1), IPv4 only. Both ToRs run BFD on their
// IPv4 sessions at 100 ms x 3; the sessions to this one keep a 9 s hold
// time, so only BFD can notice its failure quickly.

// Addr2 and Tor2Addr are the ends of the node's link to the second ToR.
func (n *Node) Addr2() string    { return fmt.Sprintf("10.96.%d.2", n.Idx) }
func (n *Node) Tor2Addr() string { return fmt.Sprintf("10.96.%d.1", n.Idx) }

func (l *TorLab) buildTor2() error {
	var err error
	if l.Tor2, err = l.newNS("tor2"); err != nil {
		return err
	}
	if err := routerSysctls(l.Tor2); err != nil {
		return err
	}
	var neighbors strings.Builder
	for _, n := range l.Nodes {
		ifName := fmt.Sprintf("eth%d", n.Idx)
		if err := runIP(
			at(netnstest.NS{}, "link", "add", ifName, "netns", l.Tor2.Name, "type", "veth", "peer", "name", "eth2", "netns", n.NS.Name),
			at(l.Tor2, "addr", "add", n.Tor2Addr()+"/24", "dev", ifName),
			at(l.Tor2, "link", "set", ifName, "up"),
			at(n.NS, "addr", "add", n.Addr2()+"/24", "dev", "eth2"),
			at(n.NS, "link", "set", "eth2", "up"),
		); err != nil {
			return err
		}
		a := n.Addr2()
		fmt.Fprintf(&neighbors, " neighbor %s remote-as %d\n neighbor %s timers 3 9\n neighbor %s timers connect 1\n neighbor %s bfd\n", a, n.ASN(), a, a, a)
	}
	conf := "hostname tor2\nrouter bgp 65000\n bgp router-id 10.96.0.1\n no bgp ebgp-requires-policy\n" +
		" bgp graceful-restart\n coalesce-time 50\n" + neighbors.String() + "!\n"
	l.FRR2, err = StartFRRWithBFD(l.Tor2, filepath.Join(l.Dir, "frr2"), conf, l.bfdConf(func(n *Node) string { return n.Addr2() }))
	return err
}

// bfdConf is bfdd's configuration: 100 ms intervals towards every node,
// at the address addr gives; empty (no bfdd) with one ToR.
func (l *TorLab) bfdConf(addr func(*Node) string) string {
	if !l.dualToR {
		if l.Mgmt.Name != "" {
			// Kubernetes mode: bfdd runs, for sessions a test turns on
			// ("neighbor X bfd profile fast").
			return "bfd\n profile fast\n  receive-interval 100\n  transmit-interval 100\n !\n!\n"
		}
		return ""
	}
	var b strings.Builder
	b.WriteString("bfd\n")
	for _, n := range l.Nodes {
		fmt.Fprintf(&b, " peer %s\n  receive-interval 100\n  transmit-interval 100\n !\n", addr(n))
	}
	return b.String() + "!\n"
}

// BFDUp reports whether f's BFD session with addr is up.
func BFDUp(f *FRR, addr string) bool {
	out, err := f.Vtysh("show bfd peer " + addr + " json")
	return err == nil && strings.Contains(out, `"status":"up"`)
}
