// Package e2e runs Petrel's real binaries against real routers in network
// namespaces. It needs root, FRR (Debian frr) and the gobgp CLI, all
// installed by test/setup.sh.
package e2e

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/bins"
)

var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test here skips in the unit tier
	}
	dir, err := bins.Build("../..", map[string]string{"petrel-agent": "./cmd/petrel-agent", "petrel": "./cmd/petrel-cni"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
