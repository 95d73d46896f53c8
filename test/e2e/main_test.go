// Package e2e runs Petrel's real binaries against real routers in network
// namespaces. It needs root, FRR (Debian frr) and the gobgp CLI, all
// installed by test/setup.sh.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "petrel-e2e")
	if err != nil {
		panic(err)
	}
	binDir = dir
	for bin, pkg := range map[string]string{"petrel-agent": "./cmd/petrel-agent", "petrel": "./cmd/petrel-cni"} {
		build := exec.Command("go", "build", "-o", filepath.Join(dir, bin), pkg)
		build.Dir = "../.."
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", bin, err)
			os.Exit(2)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
