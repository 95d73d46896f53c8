// Package bins builds Petrel's binaries once per test process, for tests
// that exercise the real programs (the CNI plugin exec'd as a runtime
// would, the agent as a DaemonSet would run it).
package bins

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Build compiles each binary (name → package path relative to the module
// root) into a new temporary directory and returns it; the caller removes
// it. moduleRoot is relative to the test's working directory.
func Build(moduleRoot string, bins map[string]string) (string, error) {
	dir, err := os.MkdirTemp("", "petrel-bins")
	if err != nil {
		return "", err
	}
	for bin, pkg := range bins {
		build := exec.Command("go", "build", "-o", filepath.Join(dir, bin), pkg)
		build.Dir = moduleRoot
		if out, err := build.CombinedOutput(); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("build %s: %v\n%s", bin, err, out)
		}
	}
	return dir, nil
}

// TestMain is a package's TestMain for tests that run the binaries: it
// builds them into *dir (not in the unit tier, -short, which runs none of
// those tests), runs the tests and removes them.
func TestMain(m *testing.M, moduleRoot string, bins map[string]string, dir *string) int {
	flag.Parse()
	if testing.Short() {
		return m.Run()
	}
	d, err := Build(moduleRoot, bins)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer os.RemoveAll(d)
	*dir = d
	return m.Run()
}
