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

	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/internal/netnstest"
)

type labPod struct {
	ns netnstest.NS
	ip string
}

// addPod wires a pod on n with the real CNI binary and the conflist the
// agent wrote, the way the runtime would hand over its first plugin entry.
func (l *torLab) addPod(n *labNode, id string) labPod {
	l.t.Helper()
	path := filepath.Join(n.dir, "net.d", cni.ConfListFile)
	waitUntil(l.t, 10*time.Second, "agent writes "+path, func() bool { _, err := os.Stat(path); return err == nil })
	var list struct {
		CNIVersion string           `json:"cniVersion"`
		Name       string           `json:"name"`
		Plugins    []map[string]any `json:"plugins"`
	}
	b, _ := os.ReadFile(path)
	if err := json.Unmarshal(b, &list); err != nil {
		l.t.Fatalf("agent's conflist: %v\n%s", err, b)
	}
	entry := list.Plugins[0]
	entry["name"], entry["cniVersion"] = list.Name, list.CNIVersion
	conf, _ := json.Marshal(entry)
	pod := netnstest.New(l.t, "pod")
	cmd := exec.Command(filepath.Join(binDir, "petrel"))
	cmd.Env = []string{"CNI_COMMAND=ADD", "CNI_CONTAINERID=" + id, "CNI_NETNS=" + pod.Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + binDir}
	cmd.Stdin = strings.NewReader(string(conf))
	var out strings.Builder
	cmd.Stdout = &out
	if err := n.ns.Start(cmd); err != nil {
		l.t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		l.t.Fatalf("CNI ADD %s on %s: %v %s", id, n.name, err, out.String())
	}
	var res struct {
		IPs []struct {
			Address string `json:"address"`
		} `json:"ips"`
	}
	json.Unmarshal([]byte(out.String()), &res)
	if len(res.IPs) == 0 {
		l.t.Fatalf("CNI ADD %s: no address in %s", id, out.String())
	}
	return labPod{ns: pod, ip: strings.Split(res.IPs[0].Address, "/")[0]}
}

func ping(t *testing.T, from netnstest.NS, to string, args ...string) string {
	t.Helper()
	out, err := from.Run("ping", append([]string{"-c1", "-W2"}, append(args, to)...)...)
	if err != nil {
		t.Fatalf("ping %s from %s: %v\n%s", to, from.Name, err, out)
	}
	return out
}

// TestTorLab is the lab of the BGP issue: an FRR ToR, two nodes running the
// real agent, a pod on each wired by the real CNI binary.
func TestTorLab(t *testing.T) {
	l := newTorLab(t, 2)
	gobgp := requireTool(t, "gobgp")
	d := waitUntil(t, 20*time.Second, "FRR sees every node session Established", func() bool { ok, _ := l.established(); return ok })
	t.Logf("agents started -> sessions Established: %s", d)
	d = l.wantRoutes(20 * time.Second)
	t.Logf("-> pod CIDR routes on every node: %s", d)
	n1, n2 := l.nodes[0], l.nodes[1]
	p1, p2 := l.addPod(n1, "pod1"), l.addPod(n2, "pod2")
	ping(t, p1.ns, p2.ip)
	ping(t, p2.ns, p1.ip)
	ping(t, n1.ns, p2.ip) // node to a pod on another node

	// The stock gobgp CLI, inside the node, over the agent's local API.
	out, err := n1.ns.Run(gobgp, "neighbor")
	if err != nil || !strings.Contains(out, n1.tor()) || !strings.Contains(out, "Establ") {
		t.Fatalf("gobgp neighbor: %v\n%s", err, out)
	}
	out, err = n1.ns.Run(gobgp, "global", "rib")
	if err != nil || !strings.Contains(out, n2.podNet) || !strings.Contains(out, n1.podNet) {
		t.Fatalf("gobgp global rib: %v\n%s", err, out)
	}

	// A NetworkPolicy dropped into node2's policyDir isolates pod2.
	l.policyDirCycle(n2, p1, p2)

	// Someone deletes a Petrel route by hand: the agent's netlink watch
	// notices and the loop puts it back.
	if out, err := n1.ns.Run("ip", "route", "del", n2.podNet); err != nil {
		t.Fatalf("foreign delete: %v %s", err, out)
	}
	d = l.wantRoutes(10 * time.Second)
	t.Logf("route deleted by hand -> back: %s", d)

	// kill -9 the agent: its routes stay in the kernel, the ToR keeps the
	// node's route as stale (graceful restart), pods keep talking.
	before := petrelRoutes(t, n1)
	if err := n1.agent.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	out, err = p1.ns.Run("ping", "-c", "30", "-i", "0.1", "-W", "1", p2.ip)
	if err != nil || !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("pings while the agent is down: %v\n%s", err, out)
	}
	if got := petrelRoutes(t, n1); got != before {
		t.Fatalf("routes changed while the agent was down:\n%s\nwas\n%s", got, before)
	}
	if err := n1.agent.Start(); err != nil {
		t.Fatal(err)
	}
	d = waitUntil(t, 20*time.Second, "session back after agent restart", func() bool { ok, _ := l.established(); return ok })
	t.Logf("agent restart -> Established: %s", d)
	l.wantRoutes(10 * time.Second)
	ping(t, p1.ns, p2.ip)

	// The ToR restarts: every node loses and regains its session.
	l.frr.Kill()
	if err := l.frr.Start(); err != nil {
		t.Fatal(err)
	}
	d = waitUntil(t, 20*time.Second, "sessions back after ToR restart", func() bool { ok, _ := l.established(); return ok })
	t.Logf("ToR restart -> Established: %s", d)
	d2 := l.wantRoutes(20 * time.Second)
	t.Logf("ToR restart -> routes on every node: %s after Established", d2)
	waitUntil(t, 10*time.Second, "pod to pod across the ToR after its restart", func() bool {
		_, err := p1.ns.Run("ping", "-c1", "-W1", p2.ip)
		return err == nil
	})

	// SIGTERM keeps everything; --uninstall then removes what the agent owns.
	if err := n1.agent.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if got := petrelRoutes(t, n1); !strings.Contains(got, n2.podNet) {
		t.Fatalf("SIGTERM removed routes: %q", got)
	}
	out, err = n1.ns.Run(filepath.Join(binDir, "petrel-agent"), "--config", filepath.Join(n1.dir, "config.yaml"), "--uninstall")
	if err != nil {
		t.Fatalf("--uninstall: %v\n%s", err, out)
	}
	if got := petrelRoutes(t, n1); got != "" {
		t.Fatalf("routes left after --uninstall: %q", got)
	}
	if _, err := os.Stat(filepath.Join(n1.dir, "net.d", cni.ConfListFile)); !os.IsNotExist(err) {
		t.Fatalf("conflist left after --uninstall: %v", err)
	}
	ping(t, n1.ns, p1.ip) // the pod itself is untouched
	if out, err := n1.ns.Run("nft", "list", "table", "inet", "petrel"); err == nil {
		t.Fatalf("nftables table left after --uninstall:\n%s", out)
	}
}

func (l *torLab) policyDirCycle(n *labNode, from, to labPod) {
	t := l.t
	pods := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: pod1, namespace: default, labels: {app: pod1}}
spec: {containers: [{name: c, image: none}]}
status: {podIPs: [{ip: %s}]}
---
apiVersion: v1
kind: Pod
metadata: {name: pod2, namespace: default, labels: {app: pod2}}
spec: {containers: [{name: c, image: none, ports: [{name: http, containerPort: 80}]}]}
status: {podIPs: [{ip: %s}]}
`, from.ip, to.ip)
	deny := `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: isolate-pod2, namespace: default}
spec:
  podSelector: {matchLabels: {app: pod2}}
  policyTypes: [Ingress]
`
	dir := filepath.Join(n.dir, "policies")
	reachable := func() bool { _, err := from.ns.Run("ping", "-c1", "-W1", to.ip); return err == nil }
	os.WriteFile(filepath.Join(dir, "pods.yaml"), []byte(pods), 0o644)
	os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(deny), 0o644)
	d := waitUntil(t, 10*time.Second, "policy from policyDir blocks pod1 -> pod2", func() bool { return !reachable() })
	t.Logf("policy file written -> enforced: %s", d)
	// A broken file is reported and ignored; the last good state stays.
	os.WriteFile(filepath.Join(dir, "broken.yaml"), []byte("kind: NetworkPolicy\nspec: [not, a, map\n"), 0o644)
	time.Sleep(1500 * time.Millisecond) // three directory polls: long enough for a wrong reload to show
	if reachable() {
		t.Fatal("a broken policy file opened the isolated pod")
	}
	logs, _ := os.ReadFile(filepath.Join(n.dir, "agent.log"))
	if !strings.Contains(string(logs), "broken.yaml") {
		t.Fatal("the broken policy file was not reported by name")
	}
	os.Remove(filepath.Join(dir, "broken.yaml"))
	os.Remove(filepath.Join(dir, "policy.yaml"))
	d = waitUntil(t, 10*time.Second, "policy removed: pod1 -> pod2 again", reachable)
	t.Logf("policy file removed -> traffic allowed: %s", d)
}
