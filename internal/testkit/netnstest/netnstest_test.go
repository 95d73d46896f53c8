package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"testing"

	"github.com/petrelnet/petrel/internal/nsrun"
)

// TestSweepSparesLiveOwners: a sweep run in a PID namespace of its own
// (where no other test process is visible) deletes nothing; in the
// machine's, it deletes a namespace whose creator is gone.
func TestSweepSparesLiveOwners(t *testing.T) {
	if os.Getenv("NETNSTEST_SWEEP_CHILD") != "" {
		sweepStale() // in the PID namespace the parent made
		return
	}
	RequireRoot(t)
	unshare := RequireTool(t, "unshare")
	owner := exec.Command("sleep", "60") // stands for another test process
	if err := owner.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { owner.Process.Kill(); owner.Wait() }()
	name := fmt.Sprintf("%s%d-sweep", Prefix, owner.Process.Pid)
	ns, err := nsrun.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Delete()
	exists := func() bool { _, err := os.Stat("/var/run/netns/" + name); return err == nil }

	child := exec.Command(unshare, "--pid", "--fork", "--mount-proc", os.Args[0], "-test.run", "^TestSweepSparesLiveOwners$")
	child.Env = append(os.Environ(), "NETNSTEST_SWEEP_CHILD=1")
	if out, err := child.CombinedOutput(); err != nil {
		t.Fatalf("the sweep in its own PID namespace: %v\n%s", err, out)
	}
	if !exists() {
		t.Fatalf("a sweep in a PID namespace of its own deleted %s, whose creator is alive", name)
	}
	sweepStale()
	if !exists() {
		t.Fatalf("the machine's sweep deleted %s, whose creator is alive", name)
	}
	owner.Process.Kill()
	owner.Wait()
	sweepStale()
	if exists() {
		t.Fatalf("%s outlived its creator through a sweep", name)
	}
}
