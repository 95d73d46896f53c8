package labtest

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// TorLab is topology (a) of the design: one FRR top-of-rack router and N
// nodes, dual-stack: each node on its own uplink (10.99.<i>.0/24 and
// fd00:99:<i>::/64, ToR .1/::1, node .2/::2), eBGP with an AS per node
// (65100+i) over an IPv4 and an IPv6 session, each node running the real
// agent with pod CIDRs 10.244.<i>.0/24 and fd00:10:244:<i>::/64. Everything lives under Dir and in
// namespaces named Prefix-<pid>-…; Close removes all of it.
type TorLab struct {
	Dir      string
	AgentBin string // petrel-agent
	CNIDir   string // holds the plugin as "petrel"
	// ExtraConfig is appended to every standalone agent's config file.
	ExtraConfig string
	Tor         netnstest.NS
	External    netnstest.NS // a host outside the cluster, behind the ToR: 10.100.0.2
	FRR         *FRR
	Nodes       []*Node
	// Kubernetes mode (NewKubeTorLab): a management namespace whose bridge
	// reaches every node's eth0, for the API server; agents use Kubeconfig.
	Mgmt       netnstest.NS
	Kubeconfig string
	// Two ToRs (NewKubeTorLab with tors=2): see tor2.go.
	Tor2    netnstest.NS
	FRR2    *FRR
	dualToR bool
	created []netnstest.NS
	procs   []*Proc
}

// MgmtHost is the API server's address on the management bridge.
const MgmtHost = "10.98.255.1"

// Node is one lab node.
type Node struct {
	Name    string
	Idx     int
	NS      netnstest.NS
	Dir     string
	Agent   *Proc
	PodNet  string
	PodNet6 string
}

// GoBGP is the stock gobgp CLI's arguments for this node's agent: its API
// socket, then args.
func (n *Node) GoBGP(args ...string) []string {
	return append([]string{"--target", "unix://" + filepath.Join(n.Dir, "run", "gobgp.sock")}, args...)
}

func (n *Node) Addr() string    { return fmt.Sprintf("10.99.%d.2", n.Idx) }
func (n *Node) TorAddr() string { return fmt.Sprintf("10.99.%d.1", n.Idx) }
func (n *Node) ASN() int        { return 65100 + n.Idx }

// MgmtAddr is the node's address on the management network.
func (n *Node) MgmtAddr() string { return fmt.Sprintf("10.98.255.%d", 10+n.Idx) }

// Addr6 and TorAddr6 are the IPv6 ends of the node's uplink.
func (n *Node) Addr6() string    { return fmt.Sprintf("fd00:99:%d::2", n.Idx) }
func (n *Node) TorAddr6() string { return fmt.Sprintf("fd00:99:%d::1", n.Idx) }

// Pod is a pod wired by the real CNI binary.
type Pod struct {
	Name string
	NS   netnstest.NS
	IP   string
	IP6  string // empty for a single-stack pod
}

func (l *TorLab) newNS(role string) (netnstest.NS, error) {
	ns, err := netnstest.Create(fmt.Sprintf("%s%d-%s", netnstest.Prefix, os.Getpid(), role))
	if err != nil {
		return ns, err
	}
	l.created = append(l.created, ns)
	_, err = ns.Run("ip", "link", "set", "lo", "up")
	return ns, err
}

// Run runs a command in ns (the caller's own when ns is zero) and turns a
// failure into an error carrying the command and its output.
func Run(ns netnstest.NS, name string, args ...string) error {
	if out, err := ns.Run(name, args...); err != nil {
		return fmt.Errorf("%s %v: %v %s", name, args, err, out)
	}
	return nil
}

// ipStep is one `ip` command in a namespace (the caller's own when zero).
type ipStep struct {
	ns   netnstest.NS
	args []string
}

func at(ns netnstest.NS, args ...string) ipStep { return ipStep{ns, args} }

// runIP runs the steps in order and stops at the first failure.
func runIP(steps ...ipStep) error {
	for _, s := range steps {
		if err := Run(s.ns, "ip", s.args...); err != nil {
			return err
		}
	}
	return nil
}

func routerSysctls(ns netnstest.NS) error {
	for _, kv := range []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0", "net.ipv6.conf.all.forwarding=1"} {
		if err := Run(ns, "sysctl", "-qw", kv); err != nil {
			return err
		}
	}
	return nil
}

// NewTorLab builds the topology and starts FRR and every agent.
func NewTorLab(dir, agentBin, cniDir string, nodes int) (*TorLab, error) {
	return NewTorLabWith(dir, agentBin, cniDir, nodes, "")
}

// NewTorLabWith is NewTorLab with extra lines for every agent's config file.
func NewTorLabWith(dir, agentBin, cniDir string, nodes int, extraConfig string) (*TorLab, error) {
	l := &TorLab{Dir: dir, AgentBin: agentBin, CNIDir: cniDir, ExtraConfig: extraConfig}
	err := l.build(nodes, false)
	for _, n := range l.Nodes {
		if err == nil {
			err = l.StartAgent(n)
		}
	}
	if err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// NewKubeTorLab builds the topology with a management network for the API
// server and starts FRR; the caller starts the API server in Mgmt, sets
// Kubeconfig and starts the agents, which then run in Kubernetes mode.
// With tors=2 every node is also linked to a second ToR (tor2.go).
func NewKubeTorLab(dir, agentBin, cniDir string, nodes, tors int) (*TorLab, error) {
	l := &TorLab{Dir: dir, AgentBin: agentBin, CNIDir: cniDir, dualToR: tors == 2}
	err := l.build(nodes, true)
	if err == nil && l.dualToR {
		err = l.buildTor2()
	}
	if err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// buildMgmt makes the management namespace and its bridge.
func (l *TorLab) buildMgmt() error {
	var err error
	if l.Mgmt, err = l.newNS("mgmt"); err != nil {
		return err
	}
	return runIP(
		at(l.Mgmt, "link", "add", "br0", "type", "bridge"), at(l.Mgmt, "link", "set", "br0", "up"),
		at(l.Mgmt, "addr", "add", MgmtHost+"/24", "dev", "br0"),
	)
}

// linkMgmt connects a node's eth0 to the management bridge.
func (l *TorLab) linkMgmt(n *Node) error {
	port := fmt.Sprintf("m%d", n.Idx)
	return runIP(
		at(netnstest.NS{}, "link", "add", port, "netns", l.Mgmt.Name, "type", "veth", "peer", "name", "eth0", "netns", n.NS.Name),
		at(l.Mgmt, "link", "set", port, "master", "br0"),
		at(l.Mgmt, "link", "set", port, "up"),
		at(n.NS, "addr", "add", n.MgmtAddr()+"/24", "dev", "eth0"),
		at(n.NS, "link", "set", "eth0", "up"),
	)
}

func (l *TorLab) build(nodes int, kube bool) error {
	// FRR's daemons run as user frr and must reach their directory.
	for d := l.Dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o005 == 0 {
			os.Chmod(d, fi.Mode().Perm()|0o005)
		}
	}
	var err error
	if l.Tor, err = l.newNS("tor"); err != nil {
		return err
	}
	if err := routerSysctls(l.Tor); err != nil {
		return err
	}
	// Outside the cluster: a host behind the ToR that knows no pod routes,
	// so pods reach it only masqueraded to their node's address.
	if l.External, err = l.newNS("external"); err != nil {
		return err
	}
	if err := runIP(
		at(netnstest.NS{}, "link", "add", "ext0", "netns", l.Tor.Name, "type", "veth", "peer", "name", "eth0", "netns", l.External.Name),
		at(l.Tor, "addr", "add", "10.100.0.1/24", "dev", "ext0"),
		at(l.Tor, "link", "set", "ext0", "up"),
		at(l.External, "addr", "add", "10.100.0.2/24", "dev", "eth0"),
		at(l.External, "link", "set", "eth0", "up"),
		at(l.External, "route", "add", "10.99.0.0/16", "via", "10.100.0.1"),
	); err != nil {
		return err
	}
	if kube {
		if err := l.buildMgmt(); err != nil {
			return err
		}
	}
	var neighbors, v6 strings.Builder
	for i := 1; i <= nodes; i++ {
		n := &Node{Name: fmt.Sprintf("node%d", i), Idx: i, Dir: filepath.Join(l.Dir, fmt.Sprintf("node%d", i)), PodNet: fmt.Sprintf("10.244.%d.0/24", i), PodNet6: fmt.Sprintf("fd00:10:244:%d::/64", i)}
		if n.NS, err = l.newNS(n.Name); err != nil {
			return err
		}
		ifName := fmt.Sprintf("eth%d", i)
		if err := runIP(
			at(netnstest.NS{}, "link", "add", ifName, "netns", l.Tor.Name, "type", "veth", "peer", "name", "eth1", "netns", n.NS.Name),
			at(l.Tor, "addr", "add", n.TorAddr()+"/24", "dev", ifName),
			at(l.Tor, "addr", "add", n.TorAddr6()+"/64", "dev", ifName, "nodad"),
			at(l.Tor, "link", "set", ifName, "up"),
			at(n.NS, "addr", "add", n.Addr()+"/24", "dev", "eth1"),
			at(n.NS, "addr", "add", n.Addr6()+"/64", "dev", "eth1", "nodad"),
			at(n.NS, "link", "set", "eth1", "up"),
			at(n.NS, "route", "add", "default", "via", n.TorAddr()),
			at(n.NS, "-6", "route", "add", "default", "via", n.TorAddr6()),
		); err != nil {
			return err
		}
		if err := routerSysctls(n.NS); err != nil {
			return err
		}
		if kube {
			if err := l.linkMgmt(n); err != nil {
				return err
			}
		}
		for _, a := range []string{n.Addr(), n.Addr6()} {
			fmt.Fprintf(&neighbors, " neighbor %s remote-as %d\n neighbor %s timers 1 3\n neighbor %s timers connect 1\n", a, n.ASN(), a, a)
		}
		if l.dualToR {
			fmt.Fprintf(&neighbors, " neighbor %s bfd\n", n.Addr())
		}
		fmt.Fprintf(&v6, "  neighbor %s activate\n", n.Addr6())
		l.Nodes = append(l.Nodes, n)
	}
	// In Kubernetes mode nodes announce Service addresses too: several
	// nodes (each its own AS) one address, an ECMP route at the ToR.
	multipath, paths := "", ""
	if kube {
		multipath, paths = " bgp bestpath as-path multipath-relax\n", "  maximum-paths 8\n"
	}
	conf := "hostname tor\nrouter bgp 65000\n bgp router-id 10.99.0.1\n no bgp ebgp-requires-policy\n" +
		" bgp graceful-restart\n coalesce-time 50\n" + multipath + neighbors.String() +
		" address-family ipv4 unicast\n" + paths + strings.ReplaceAll(v6.String(), "activate", "deactivate") + " exit-address-family\n" +
		" address-family ipv6 unicast\n" + paths + v6.String() + " exit-address-family\n!\n"
	l.FRR, err = StartFRRWithBFD(l.Tor, filepath.Join(l.Dir, "frr"), conf, l.bfdConf(func(n *Node) string { return n.Addr() }))
	return err
}

// StartAgent writes the node's config and starts its agent.
func (l *TorLab) StartAgent(n *Node) error {
	if err := os.MkdirAll(filepath.Join(n.Dir, "policies"), 0o755); err != nil {
		return err
	}
	if l.Kubeconfig != "" {
		return l.startKubeAgent(n)
	}
	conf := fmt.Sprintf(`nodeName: %[1]s
routerID: %[2]s
asn: %[3]d
podCIDRs: [%[4]s, %[7]s]
clusterCIDRs: [10.244.0.0/16, fd00:10:244::/48]
noMasqueradeCIDRs: [10.99.0.0/16, fd00:99::/32]
dataDir: %[5]s/data
cniConfDir: %[5]s/net.d
policyDir: %[5]s/policies
grpcAddress: unix://%[5]s/run/gobgp.sock
mtu: 1450
logLevel: debug
peers:
  - {address: %[6]s, asn: 65000, holdTime: 3s, keepaliveTime: 1s, connectRetry: 1s}
  - {address: %[8]s, asn: 65000, holdTime: 3s, keepaliveTime: 1s, connectRetry: 1s}
%[9]s`, n.Name, n.Addr(), n.ASN(), n.PodNet, n.Dir, n.TorAddr(), n.PodNet6, n.TorAddr6(), l.ExtraConfig)
	path := filepath.Join(n.Dir, "config.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	p, err := StartProc(n.NS, filepath.Join(n.Dir, "agent.log"), l.AgentBin, "--config", path)
	if err != nil {
		return err
	}
	n.Agent = p
	l.procs = append(l.procs, p)
	return nil
}

// startKubeAgent runs the agent in Kubernetes mode: identity, pod CIDRs
// and peers come from the cluster; the file keeps the cluster-wide keys.
func (l *TorLab) startKubeAgent(n *Node) error {
	conf := fmt.Sprintf(`clusterCIDRs: [10.244.0.0/16, fd00:10:244::/48]
noMasqueradeCIDRs: [10.99.0.0/16, fd00:99::/32]
dataDir: %[1]s/data
cniConfDir: %[1]s/net.d
grpcAddress: unix://%[1]s/run/gobgp.sock
mtu: 1450
logLevel: debug
`, n.Dir)
	path := filepath.Join(n.Dir, "config.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	// Each node its own kubeconfig, as each host has its own.
	kc, err := os.ReadFile(l.Kubeconfig)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(n.Dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, kc, 0o600); err != nil {
		return err
	}
	p, err := StartProc(n.NS, filepath.Join(n.Dir, "agent.log"), "env", "NODE_NAME="+n.Name,
		l.AgentBin, "--config", path, "--kubeconfig", kubeconfig)
	if err != nil {
		return err
	}
	n.Agent = p
	l.procs = append(l.procs, p)
	return nil
}

// Close stops every process and deletes every namespace it made.
func (l *TorLab) Close() {
	for _, p := range l.procs {
		p.Signal(syscall.SIGKILL)
	}
	for _, f := range []*FRR{l.FRR, l.FRR2} {
		if f != nil {
			f.Kill()
		}
	}
	for i := len(l.created) - 1; i >= 0; i-- {
		l.created[i].Delete()
	}
}

// Established reports whether FRR sees every node session Established,
// and FRR's JSON summary.
func (l *TorLab) Established() (bool, string) {
	ok, out := established(l.FRR, l.Nodes, func(n *Node) []string { return []string{n.Addr(), n.Addr6()} })
	if ok && l.FRR2 != nil {
		return established(l.FRR2, l.Nodes, func(n *Node) []string { return []string{n.Addr2()} })
	}
	return ok, out
}

// established reports whether f sees each node's sessions at addrs
// Established.
func established(f *FRR, nodes []*Node, addrs func(*Node) []string) (bool, string) {
	out, err := f.Vtysh("show bgp summary json")
	if err != nil {
		return false, out
	}
	type peers struct {
		Peers map[string]struct {
			State string `json:"state"`
		} `json:"peers"`
	}
	var sum struct {
		IPv4Unicast peers `json:"ipv4Unicast"`
		IPv6Unicast peers `json:"ipv6Unicast"`
	}
	if err := json.Unmarshal([]byte(out), &sum); err != nil {
		return false, out
	}
	for _, n := range nodes {
		for _, a := range addrs(n) {
			p := sum.IPv4Unicast.Peers[a]
			if strings.Contains(a, ":") {
				p = sum.IPv6Unicast.Peers[a]
			}
			if p.State != "Established" {
				return false, out
			}
		}
	}
	return true, out
}

// PetrelRoutes is a node's kernel table of Petrel's protocol, both
// families, in ip's words.
func PetrelRoutes(n *Node) (string, error) {
	out, err := n.NS.Run("ip", "route", "show", "proto", "61")
	if err != nil {
		return out, err
	}
	out6, err := n.NS.Run("ip", "-6", "route", "show", "proto", "61")
	return strings.Join(strings.Fields(out+" "+out6), " "), err
}

// RoutesComplete reports whether every node holds a route to every other
// node's pod CIDR via the ToR, and a blackhole for its own.
func (l *TorLab) RoutesComplete() bool {
	for _, n := range l.Nodes {
		got, err := PetrelRoutes(n)
		if err != nil || !strings.Contains(got, "blackhole "+n.PodNet) || !strings.Contains(got, "blackhole "+n.PodNet6) {
			return false
		}
		for _, o := range l.Nodes {
			if o != n && (!strings.Contains(got, o.PodNet+" via "+n.TorAddr()) || !strings.Contains(got, o.PodNet6+" via "+n.TorAddr6())) {
				return false
			}
		}
	}
	return true
}

// AddPod wires a pod on n with the real CNI binary and the conflist the
// agent wrote.
func (l *TorLab) AddPod(n *Node, id string) (Pod, error) {
	pod, err := l.newNS(id)
	if err != nil {
		return Pod{}, err
	}
	return WirePod(n.NS, filepath.Join(n.Dir, "net.d", "10-petrel.conflist"), l.CNIDir, id, pod)
}

// WirePod runs CNI ADD for pod in node with the conflist at path (waiting
// for the agent to write it), handing over its first plugin entry as a
// runtime would.
func WirePod(node netnstest.NS, path, cniDir, id string, pod netnstest.NS) (Pod, error) {
	if _, err := wait.For(10*time.Second, "agent writes "+path, func() bool { _, err := os.Stat(path); return err == nil }); err != nil {
		return Pod{}, err
	}
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &list); err != nil {
		return Pod{}, fmt.Errorf("agent's conflist: %w", err)
	}
	entry := list.Plugins[0]
	entry["name"], entry["cniVersion"] = list.Name, list.CNIVersion
	conf, _ := json.Marshal(entry)
	cmd := exec.Command(filepath.Join(cniDir, "petrel"))
	cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + id, "CNI_NETNS=" + pod.Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + cniDir,
		"CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + id}
	cmd.Stdin = strings.NewReader(string(conf))
	var out strings.Builder
	cmd.Stdout = &out
	if err := node.Start(cmd); err != nil {
		return Pod{}, err
	}
	if err := cmd.Wait(); err != nil {
		return Pod{}, fmt.Errorf("CNI ADD %s: %v %s", id, err, out.String())
	}
	var res struct{ IPs []struct{ Address string } }
	json.Unmarshal([]byte(out.String()), &res)
	if len(res.IPs) == 0 {
		return Pod{}, fmt.Errorf("CNI ADD %s: no address in %s", id, out.String())
	}
	p := Pod{Name: id, NS: pod, IP: strings.Split(res.IPs[0].Address, "/")[0]}
	if len(res.IPs) > 1 {
		p.IP6 = strings.Split(res.IPs[1].Address, "/")[0]
	}
	return p, nil
}

// Namespaces lists every namespace the lab made, pods included.
func (l *TorLab) Namespaces() []netnstest.NS { return l.created }
