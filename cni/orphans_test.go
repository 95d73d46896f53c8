package cni_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

// TestChainedDelFailureLeavesNothing is the runtime's view of a chain whose
// last plugin fails DEL (Debian's portmap 1.1.1 refusing a 1.1.0 list did
// exactly that): libcni v1.1.2, the one containerd 1.6 and 1.7 embed, runs
// DEL from the end and stops at the failure, so Petrel's DEL never runs.
// When the runtime then removes the pod's namespace, the kernel takes the
// veth and its routes, and the agent's periodic ReleaseOrphans frees the
// address: nothing is left. A live pod next to it keeps its address, and
// an orphan younger than the minimum age is kept (an ADD may be running).
func TestChainedDelFailureLeavesNothing(t *testing.T) {
	n := newNode(t)
	cnitool := netnstest.RequireTool(t, "cnitool-v1.1.2")
	bin := t.TempDir()
	if out, err := exec.Command("go", "build", "-o", filepath.Join(bin, "faildel"), "./testdata/faildel").CombinedOutput(); err != nil {
		t.Fatalf("build faildel: %v\n%s", err, out)
	}
	var plugin map[string]any
	json.Unmarshal([]byte(n.conf()), &plugin)
	delete(plugin, "cniVersion")
	delete(plugin, "name")
	dir := t.TempDir()
	list, _ := json.Marshal(map[string]any{"cniVersion": "1.0.0", "name": "petrel",
		"plugins": []any{plugin, map[string]any{"type": "faildel"}}})
	if err := os.WriteFile(filepath.Join(dir, "10-petrel.conflist"), list, 0o644); err != nil {
		t.Fatal(err)
	}
	tool := func(verb string, pod netnstest.NS) (string, error) {
		return n.client(cnitool, []string{"NETCONFPATH=" + dir, "CNI_PATH=" + filepath.Dir(pluginBin) + ":" + bin}, verb, "petrel", pod.Path())
	}
	release := func(minAge time.Duration) int {
		var freed int
		err := n.ns.Do(func() error {
			as, err := cni.ReleaseOrphans(n.dataDir, "petrel", minAge, time.Now())
			freed = len(as)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return freed
	}

	gone, live := netnstest.New(t, "pod"), netnstest.New(t, "pod")
	for _, pod := range []netnstest.NS{gone, live} {
		if out, err := tool("add", pod); err != nil {
			t.Fatalf("ADD: %v\n%s", err, out)
		}
	}
	out, err := tool("del", gone)
	if err == nil || !strings.Contains(out, "faildel") {
		t.Fatalf("DEL through the failing chain succeeded: %s", out)
	}
	if got := len(n.allocations()); got != 4 {
		t.Fatalf("after the failed DEL %d addresses are allocated, want 4 (both pods, v4 and v6): Petrel's DEL must not have run", got)
	}
	if err := gone.Delete(); err != nil { // the runtime gives up on the sandbox
		t.Fatal(err)
	}
	if freed := release(time.Hour); freed != 0 {
		t.Fatalf("released %d addresses younger than the minimum age", freed)
	}
	if freed := release(0); freed != 2 {
		t.Fatalf("released %d addresses, want the vanished pod's 2", freed)
	}
	if as := n.allocations(); len(as) != 2 {
		t.Fatalf("the live pod's addresses were touched: %v", as)
	}
	ping(t, n.ns, n.allocations()[0].IP.String())
	if freed := release(0); freed != 0 {
		t.Fatalf("a second pass released %d more", freed)
	}

	// The live pod, deleted through a chain that works: nothing left.
	if err := os.WriteFile(filepath.Join(dir, "10-petrel.conflist"), []byte(strings.Replace(string(list), `,{"type":"faildel"}`, "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := tool("del", live); err != nil {
		t.Fatalf("DEL: %v\n%s", err, out)
	}
	n.assertClean()
}
