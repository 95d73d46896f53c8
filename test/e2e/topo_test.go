package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrelnet/petrel/internal/labtest"
	"github.com/petrelnet/petrel/internal/netnstest"
)

// torLab is topology (a) of the design: one FRR top-of-rack router, nodes
// on their own /24 uplinks, eBGP with an AS per node.
type torLab struct {
	t     *testing.T
	dir   string
	tor   netnstest.NS
	frr   *labtest.FRR
	nodes []*labNode
}

type labNode struct {
	name   string
	idx    int
	ns     netnstest.NS
	dir    string
	agent  *labtest.Proc
	podNet string // 10.244.<idx>.0/24
}

func (n *labNode) addr() string { return fmt.Sprintf("10.99.%d.2", n.idx) }
func (n *labNode) tor() string  { return fmt.Sprintf("10.99.%d.1", n.idx) }
func (n *labNode) asn() int     { return 65100 + n.idx }

func mustIP(t *testing.T, ns netnstest.NS, args ...string) {
	t.Helper()
	var out string
	var err error
	if ns.Name == "" {
		b, e := exec.Command("ip", args...).CombinedOutput()
		out, err = string(b), e
	} else {
		out, err = ns.Run("ip", args...)
	}
	if err != nil {
		t.Fatalf("ip %v: %v %s", args, err, out)
	}
}

func sysctls(t *testing.T, ns netnstest.NS) {
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"} {
		if out, err := ns.Run("sysctl", "-qw", kv); err != nil {
			t.Fatalf("sysctl %s in %s: %v %s", kv, ns.Name, err, out)
		}
	}
}

func newTorLab(t *testing.T, nodes int) *torLab {
	netnstest.RequireRoot(t)
	requireTool(t, labtest.FRRDir+"/bgpd")
	l := &torLab{t: t, dir: t.TempDir(), tor: netnstest.New(t, "tor")}
	// FRR's daemons run as user frr and must reach their directory.
	os.Chmod(l.dir, 0o755)
	os.Chmod(filepath.Dir(l.dir), 0o755)
	sysctls(t, l.tor)
	var neighbors strings.Builder
	for i := 1; i <= nodes; i++ {
		n := &labNode{name: fmt.Sprintf("node%d", i), idx: i, ns: netnstest.New(t, fmt.Sprintf("node%d", i)),
			dir: filepath.Join(l.dir, fmt.Sprintf("node%d", i)), podNet: fmt.Sprintf("10.244.%d.0/24", i)}
		sysctls(t, n.ns)
		ifName := fmt.Sprintf("eth%d", i)
		mustIP(t, netnstest.NS{}, "link", "add", ifName, "netns", l.tor.Name, "type", "veth", "peer", "name", "eth1", "netns", n.ns.Name)
		mustIP(t, l.tor, "addr", "add", n.tor()+"/24", "dev", ifName)
		mustIP(t, l.tor, "link", "set", ifName, "up")
		mustIP(t, n.ns, "addr", "add", n.addr()+"/24", "dev", "eth1")
		mustIP(t, n.ns, "link", "set", "eth1", "up")
		mustIP(t, n.ns, "route", "add", "default", "via", n.tor())
		fmt.Fprintf(&neighbors, " neighbor %s remote-as %d\n neighbor %s timers 1 3\n neighbor %s timers connect 1\n",
			n.addr(), n.asn(), n.addr(), n.addr())
		l.nodes = append(l.nodes, n)
	}
	conf := "hostname tor\nrouter bgp 65000\n bgp router-id 10.99.0.1\n no bgp ebgp-requires-policy\n" +
		" bgp graceful-restart\n coalesce-time 50\n" + neighbors.String() + "!\n"
	frr, err := labtest.StartFRR(l.tor, filepath.Join(l.dir, "frr"), conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(frr.Kill)
	l.frr = frr
	for _, n := range l.nodes {
		l.startAgent(n)
	}
	return l
}

func (l *torLab) startAgent(n *labNode) {
	os.MkdirAll(filepath.Join(n.dir, "policies"), 0o755)
	conf := fmt.Sprintf(`nodeName: %s
routerID: %s
asn: %d
podCIDRs: [%s]
clusterCIDRs: [10.244.0.0/16]
dataDir: %s/data
cniConfDir: %s/net.d
mtu: 1450
policyDir: %s/policies
logLevel: debug
peers:
  - {address: %s, asn: 65000, holdTime: 3s, keepaliveTime: 1s, connectRetry: 1s}
`, n.name, n.addr(), n.asn(), n.podNet, n.dir, n.dir, n.dir, n.tor())
	path := filepath.Join(n.dir, "config.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		l.t.Fatal(err)
	}
	p, err := labtest.StartProc(n.ns, filepath.Join(n.dir, "agent.log"), filepath.Join(binDir, "petrel-agent"), "--config", path)
	if err != nil {
		l.t.Fatal(err)
	}
	n.agent = p
	l.t.Cleanup(func() { p.Signal(syscall.SIGKILL) })
}

// established reports FRR's view of every node session.
func (l *torLab) established() (bool, string) {
	out, err := l.frr.Vtysh("show bgp summary json")
	if err != nil {
		return false, out
	}
	var sum struct {
		IPv4Unicast struct {
			Peers map[string]struct {
				State string `json:"state"`
			} `json:"peers"`
		} `json:"ipv4Unicast"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		return false, out
	}
	for _, n := range l.nodes {
		if sum.IPv4Unicast.Peers[n.addr()].State != "Established" {
			return false, out
		}
	}
	return true, out
}

// petrelRoutes is a node's kernel table of Petrel's protocol, in ip's words.
func petrelRoutes(t *testing.T, n *labNode) string {
	out, err := n.ns.Run("ip", "route", "show", "proto", "61")
	if err != nil {
		t.Fatalf("ip route in %s: %v %s", n.name, err, out)
	}
	return strings.Join(strings.Fields(out), " ")
}

// waitUntil polls cond every 10 ms and returns how long it took.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		if cond() {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, limit)
	return 0
}

// wantRoutes waits until every node holds a Petrel route to every other
// node's pod CIDR via the ToR, and a blackhole for its own.
func (l *torLab) wantRoutes(limit time.Duration) time.Duration {
	return waitUntil(l.t, limit, "pod CIDR routes on every node", func() bool {
		for _, n := range l.nodes {
			got := petrelRoutes(l.t, n)
			if !strings.Contains(got, "blackhole "+n.podNet) {
				return false
			}
			for _, o := range l.nodes {
				if o != n && !strings.Contains(got, o.podNet+" via "+n.tor()) {
					return false
				}
			}
		}
		return true
	})
}
