// Package netnstest creates throwaway network namespaces for kernel tests
// and runs commands and sockets inside them. Every namespace it makes is
// named with Prefix and the test process ID, and is deleted by exact name.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netns"
)

// Prefix starts the name of every namespace the tests create.
const Prefix = "ptltest-"

// RequireRoot skips the test with a clear message unless it runs as root.
// In CI (CI=true) a privileged test that cannot run is a failure instead.
func RequireRoot(t testing.TB) {
	t.Helper()
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

var seq atomic.Int64

// NS is a named network namespace under /var/run/netns.
type NS struct {
	Name string
}

// Path is the namespace's bind mount, the value for CNI_NETNS.
func (n NS) Path() string { return filepath.Join("/var/run/netns", n.Name) }

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
// deleted, each by its exact name.
func sweepStale() {
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

// Create makes a named namespace without touching the caller's: the new
// namespace is created on a locked thread that is then switched back.
func Create(name string) (NS, error) {
	sweep.Do(sweepStale)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return NS{}, err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if err != nil {
		return NS{}, fmt.Errorf("create netns %s: %w", name, err)
	}
	h.Close()
	if err := netns.Set(orig); err != nil {
		// The thread is in the wrong namespace: let it die with the goroutine.
		panic(fmt.Sprintf("cannot return to the original netns: %v", err))
	}
	return NS{Name: name}, nil
}

// Delete removes the namespace by its exact name.
func (n NS) Delete() error { return netns.DeleteNamed(n.Name) }

// Do runs fn on a thread inside the namespace. Sockets made in fn stay in
// the namespace after fn returns, so fn should only create them.
func (n NS) Do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.Name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", n.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("cannot return to the original netns: %v", err))
	}
	return ferr
}

// Start starts cmd inside the namespace: the child is forked from a thread
// that is in it, so it inherits the namespace and nothing else changes.
func (n NS) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// Run runs a command inside the namespace (the zero NS: the caller's own)
// and returns its combined output.
func (n NS) Run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := cmd.Start
	if n.Name != "" {
		start = func() error { return n.Start(cmd) }
	}
	if err := start(); err != nil {
		return "", err
	}
	err := cmd.Wait()
	return out.String(), err
}
