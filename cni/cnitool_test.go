package cni_test

import (
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

// TestCnitoolPortmapChain drives Petrel through a real runtime client:
// cnitool runs a conflist chaining Petrel with the reference portmap
// plugin, and a client outside the node reaches the pod via a hostPort.
func TestCnitoolPortmapChain(t *testing.T) {
	n := newNode(t)
	cnitool := netnstest.RequireTool(t, "cnitool")
	netnstest.RequireTool(t, "/usr/lib/cni/portmap")

	client := netnstest.New(t, "client")
	mustRun(t, netnstest.NS{}, "ip", "link", "add", "up0", "netns", n.ns.Name, "type", "veth", "peer", "name", "up0", "netns", client.Name)
	mustRun(t, n.ns, "ip", "addr", "add", "10.99.9.1/24", "dev", "up0")
	mustRun(t, n.ns, "ip", "link", "set", "up0", "up")
	mustRun(t, client, "ip", "addr", "add", "10.99.9.2/24", "dev", "up0")
	mustRun(t, client, "ip", "link", "set", "up0", "up")

	confDir := t.TempDir()
	var plugin map[string]any
	json.Unmarshal([]byte(n.conf()), &plugin)
	delete(plugin, "cniVersion")
	delete(plugin, "name")
	list := map[string]any{
		"cniVersion": "1.0.0", "name": "petrel-portmap", // Debian's portmap speaks up to 1.0.0
		"plugins": []any{plugin, map[string]any{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}}},
	}
	alone := map[string]any{"cniVersion": "1.1.0", "name": "petrel-alone", "plugins": []any{plugin}}
	for file, l := range map[string]any{"10-portmap.conflist": list, "20-alone.conflist": alone} {
		b, _ := json.Marshal(l)
		if err := os.WriteFile(filepath.Join(confDir, file), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	pod, other := newPodNS(t), newPodNS(t)
	env := []string{"NETCONFPATH=" + confDir, "CNI_PATH=" + filepath.Dir(pluginBin) + ":/usr/lib/cni",
		`CAP_ARGS={"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}`}
	tool := func(verb, network string, pod netnstest.NS) string {
		out, err := n.client(cnitool, env, verb, network, pod.Path())
		if err != nil {
			t.Fatalf("cnitool %s: %v\n%s", verb, err, out)
		}
		return out
	}
	out := tool("add", "petrel-portmap", pod)
	if !strings.Contains(out, `"10.244.1.2/32"`) {
		t.Fatalf("cnitool add printed %s, want the pod's address", out)
	}
	ping(t, n.ns, "10.244.1.2")

	var ln net.Listener
	if err := pod.Do(func() (err error) { ln, err = net.Listen("tcp", ":80"); return }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello from the pod\n")
			c.Close()
		}
	}()
	var conn net.Conn
	err := client.Do(func() (err error) { conn, err = net.DialTimeout("tcp", "10.99.9.1:8080", 3*time.Second); return })
	if err != nil {
		t.Fatalf("hostPort 8080 from outside the node: %v", err)
	}
	conn.SetDeadline(time.Now().Add(3 * time.Second))
	got, _ := io.ReadAll(conn)
	conn.Close()
	if string(got) != "hello from the pod\n" {
		t.Fatalf("hostPort answered %q", got)
	}

	// Debian's portmap 1.1.1 fails CHECK on its own ip6tables rules, so
	// CHECK through cnitool runs on a conflist of Petrel alone.
	tool("del", "petrel-portmap", pod)
	tool("del", "petrel-portmap", pod)
	out = tool("add", "petrel-alone", other)
	if !strings.Contains(out, `"fd00:10:244:1::`) {
		t.Fatalf("cnitool add printed %s, want an IPv6 address too", out)
	}
	tool("check", "petrel-alone", other)
	tool("del", "petrel-alone", other)
	n.assertClean()
}

func mustRun(t *testing.T, ns netnstest.NS, name string, args ...string) {
	t.Helper()
	if err := labtest.Run(ns, name, args...); err != nil {
		t.Fatal(err)
	}
}

// TestConfListWithAnOlderRuntime runs the conflist the agent writes, as
// written (Petrel chained with Debian's portmap 1.1.1), through cnitool of
// CNI v1.1.2: the libcni that containerd 1.6 and 1.7 embed. ADD and DEL
// work and nothing is left. The same list at 1.1.0 is what such a runtime
// cannot read ("unsupported CNI result version"): the reason the default
// is 1.0.0.
func TestConfListWithAnOlderRuntime(t *testing.T) {
	n := newNode(t)
	old := netnstest.RequireTool(t, "cnitool-v1.1.2")
	netnstest.RequireTool(t, "/usr/lib/cni/portmap")
	run := func(version, verb string, pod netnstest.NS) (string, error) {
		dir := t.TempDir()
		c := cni.ConfList{MTU: 1500, DataDir: n.dataDir, PortMap: true, CNIVersion: version,
			Ranges: []netip.Prefix{netip.MustParsePrefix("10.244.1.0/24"), netip.MustParsePrefix("fd00:10:244:1::/64")}}
		if _, err := cni.WriteConfList(dir, c); err != nil {
			t.Fatal(err)
		}
		return n.client(old, []string{"NETCONFPATH=" + dir, "CNI_PATH=" + filepath.Dir(pluginBin) + ":/usr/lib/cni",
			`CAP_ARGS={"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}`}, verb, cni.PluginType, pod.Path())
	}
	pod := newPodNS(t)
	out, err := run(cni.DefaultConfListVersion, "add", pod)
	if err != nil || !strings.Contains(out, `"10.244.1.2/32"`) {
		t.Fatalf("ADD through libcni v1.1.2: %v\n%s", err, out)
	}
	ping(t, n.ns, "10.244.1.2")
	for range 2 {
		if out, err := run(cni.DefaultConfListVersion, "del", pod); err != nil {
			t.Fatalf("DEL through libcni v1.1.2: %v\n%s", err, out)
		}
	}
	n.assertClean()

	other := newPodNS(t)
	out, err = run("1.1.0", "add", other)
	if err == nil || !strings.Contains(out, "1.1.0") {
		t.Fatalf("a 1.1.0 list through libcni v1.1.2: %v\n%s\nwant the refusal older runtimes give", err, out)
	}
	t.Logf("libcni v1.1.2 with a 1.1.0 list: %s", strings.TrimSpace(out))
	if out, err := run(cni.DefaultConfListVersion, "del", other); err != nil {
		t.Fatalf("DEL: %v\n%s", err, out)
	}
	n.assertClean()
}
