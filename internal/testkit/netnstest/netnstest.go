// Package netnstest creates throwaway network namespaces for kernel tests
// (the namespace handling itself is internal/nsrun). Every namespace it makes is
// named with Prefix and the test process ID, and is deleted by exact name.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"

	"github.com/petrelnet/petrel/internal/nsrun"
)

// Prefix starts the name of every namespace the tests create.
const Prefix = "ptltest-"

// RequireRoot skips the test with a clear message unless it runs as root.
// In CI (CI=true) a privileged test that cannot run is a failure instead.
// In the unit tier (go test -short, `make test-unit`) it always skips: that
// tier touches no kernel state, as root or not.
func RequireRoot(t testing.TB) {
	t.Helper()
	SkipInUnitTier(t)
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("kernel test needs root (network namespaces, veths, routes) and CI must run it")
	}
	t.Skip("kernel test skipped: needs root for network namespaces, veths and routes (run `sudo make test`)")
}

// RequireTool finds an external program a test drives (test/setup.sh
// installs them all). In CI a missing one fails the test; elsewhere the test
// is skipped with a message naming it.
func RequireTool(t testing.TB, path string) string {
	t.Helper()
	SkipInUnitTier(t)
	p, err := exec.LookPath(path)
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not installed: run test/setup.sh", path)
	}
	t.Skipf("%s not installed (run test/setup.sh): %v", path, err)
	return ""
}

// SkipInUnitTier skips a test that needs root, the kernel, installed tools
// or a built API server when the tests run as the unit tier (-short).
func SkipInUnitTier(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("not in the unit tier (-short): needs root, the kernel or installed tools (make test)")
	}
}

var seq atomic.Int64

// NS is a named network namespace (internal/nsrun).
type NS = nsrun.NS

// New creates a namespace with lo up, deleted when the test ends.
func New(t testing.TB, role string) NS {
	t.Helper()
	n, err := Create(fmt.Sprintf("%s%d-%d-%s", Prefix, os.Getpid(), seq.Add(1), role))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Delete() })
	if out, err := n.Run("ip", "link", "set", "lo", "up"); err != nil {
		t.Fatalf("lo up in %s: %v %s", n.Name, err, out)
	}
	return n
}

var sweep sync.Once

// sweepStale deletes namespaces left by test processes that were killed
// before their cleanup ran (a timeout, a crash): names carry the creating
// process's ID, and only names with Prefix whose process is gone are
// deleted, each by its exact name; only from the machine's own PID
// namespace, the only one that sees every process.
func sweepStale() {
	if !inMachinePIDNamespace() {
		return
	}
	entries, _ := os.ReadDir("/var/run/netns")
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), Prefix)
		if !ok {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(strings.TrimLeft(pidText, "abcdefghijklmnopqrstuvwxyz"))
		if err != nil || pid == os.Getpid() {
			continue
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); os.IsNotExist(err) {
			netns.DeleteNamed(e.Name())
		}
	}
}

// initialPIDNamespace is the machine's own PID namespace as
// /proc/self/ns/pid names it (the kernel's PROC_PID_INIT_INO).
const initialPIDNamespace = "pid:[4026531836]"

// inMachinePIDNamespace reports whether this process sees every process in
// /proc. A test re-run in a PID namespace of its own (policy's
// TestWatchInOwnPIDNamespace) sees only its own, so every other test
// process's namespaces would look stale to it: it swept a concurrently
// running e2e test's namespaces away. Elsewhere (in a container too) the
// sweep is skipped.
func inMachinePIDNamespace() bool {
	ns, err := os.Readlink("/proc/self/ns/pid")
	return err == nil && ns == initialPIDNamespace
}

// Create makes a namespace named name, after deleting namespaces that
// killed test processes left behind.
func Create(name string) (NS, error) {
	sweep.Do(sweepStale)
	return nsrun.Create(name)
}

// MustIP runs `ip args...` in ns (the zero NS: the caller's own) and fails
// the test on error.
func MustIP(t testing.TB, ns NS, args ...string) {
	t.Helper()
	if out, err := ns.Run("ip", args...); err != nil {
		t.Fatalf("ip %v in %q: %v %s", args, ns.Name, err, out)
	}
}
