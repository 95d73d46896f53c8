package cni_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"

	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/internal/rtproto"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

var pluginBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "petrel-cni-test")
	if err != nil {
		panic(err)
	}
	pluginBin = filepath.Join(dir, "petrel")
	build := exec.Command("go", "build", "-o", pluginBin, "github.com/petrelnet/petrel/cmd/petrel-cni")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build petrel-cni:", err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// node is a throwaway "node": a namespace with an address on lo that plays
// the host, and the plugin config whose store lives in the test's temp dir.
type node struct {
	t       testing.TB
	ns      netnstest.NS
	dataDir string
	ranges  []string
}

func newNode(t testing.TB, ranges ...string) *node {
	netnstest.RequireRoot(t)
	if len(ranges) == 0 {
		ranges = []string{"10.244.1.0/24", "fd00:10:244:1::/64"}
	}
	n := &node{t: t, ns: netnstest.New(t, "node"), dataDir: t.TempDir(), ranges: ranges}
	for _, a := range []string{"10.99.0.1/32", "fd00:99::1/128"} {
		if out, err := n.ns.Run("ip", "addr", "add", a, "dev", "lo"); err != nil {
			t.Fatalf("node address %s: %v %s", a, err, out)
		}
	}
	return n
}

func (n *node) conf() string {
	c := map[string]any{
		"cniVersion": "1.1.0", "name": "petrel", "type": "petrel", "mtu": 1450,
		"ipam": map[string]any{"type": "petrel", "ranges": n.ranges, "dataDir": n.dataDir},
	}
	b, _ := json.Marshal(c)
	return string(b)
}

// run execs the real plugin binary inside the node namespace.
func (n *node) run(command, id, netns, ifName, conf string) ([]byte, *types.Error) {
	cmd := exec.Command(pluginBin)
	cmd.Env = []string{
		"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + id, "CNI_NETNS=" + netns,
		"CNI_IFNAME=" + ifName, "CNI_PATH=/usr/lib/cni", "CNI_ARGS=K8S_POD_NAMESPACE=default;K8S_POD_NAME=" + id,
	}
	cmd.Stdin = strings.NewReader(conf)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := n.ns.Start(cmd); err != nil {
		n.t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		var e types.Error
		if jerr := json.Unmarshal(out.Bytes(), &e); jerr != nil {
			n.t.Fatalf("%s %s: %v, stdout %q is not a CNI error: %v (stderr %q)", command, id, err, out.String(), jerr, errOut.String())
		}
		return out.Bytes(), &e
	}
	return out.Bytes(), nil
}

type pod struct {
	id  string
	ns  netnstest.NS
	res *current.Result
}

func (n *node) add(id string) *pod {
	n.t.Helper()
	p := &pod{id: id, ns: netnstest.New(n.t, "pod")}
	out, err := n.run("ADD", id, p.ns.Path(), "eth0", n.conf())
	if err != nil {
		n.t.Fatalf("ADD %s: %v", id, err)
	}
	res, perr := current.NewResult(out)
	if perr != nil {
		n.t.Fatalf("ADD %s result %s: %v", id, out, perr)
	}
	p.res = res.(*current.Result)
	return p
}

func (n *node) del(p *pod) {
	n.t.Helper()
	if _, err := n.run("DEL", p.id, p.ns.Path(), "eth0", n.conf()); err != nil {
		n.t.Fatalf("DEL %s: %v", p.id, err)
	}
}

func (n *node) check(p *pod) *types.Error {
	c := map[string]any{}
	json.Unmarshal([]byte(n.conf()), &c)
	c["prevResult"] = p.res
	b, _ := json.Marshal(c)
	_, err := n.run("CHECK", p.id, p.ns.Path(), "eth0", string(b))
	return err
}

func (p *pod) ip(v6 bool) string {
	for _, ipc := range p.res.IPs {
		if (ipc.Address.IP.To4() == nil) == v6 {
			return ipc.Address.IP.String()
		}
	}
	return ""
}

// ping sends real ICMP echo from one namespace.
func ping(t testing.TB, from netnstest.NS, addr string) {
	t.Helper()
	if out, err := from.Run("ping", "-c1", "-W2", addr); err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", addr, from.Name, err, out)
	}
}

// leftovers lists what Petrel owns in the node namespace: host veths and
// pod routes. An empty string means nothing is left.
func (n *node) leftovers() string {
	var out []string
	err := n.ns.Do(func() error {
		h, err := netlink.NewHandle()
		if err != nil {
			return err
		}
		defer h.Close()
		links, err := h.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if l.Type() == "veth" && strings.HasPrefix(l.Attrs().Name, cni.HostVethPrefix) {
				out = append(out, "veth "+l.Attrs().Name)
			}
		}
		routes, err := h.RouteListFiltered(netlink.FAMILY_ALL, &netlink.Route{Protocol: rtproto.Pod}, netlink.RT_FILTER_PROTOCOL)
		for _, r := range routes {
			out = append(out, "route "+r.Dst.String())
		}
		return err
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return strings.Join(out, ", ")
}

func newPodNS(t testing.TB) netnstest.NS { return netnstest.New(t, "pod") }

// client runs a runtime client (cnitool) inside the node namespace with
// extra environment, and returns its combined output.
func (n *node) client(bin string, env []string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := n.ns.Start(cmd); err != nil {
		n.t.Fatal(err)
	}
	err := cmd.Wait()
	return out.String(), err
}
