package policy_test

import (
	"flag"
	"fmt"
	"os"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/bins"
)

// cniDir holds the real CNI plugin, built once: the kernel tests wire their
// pods with it, as a container runtime would.
var cniDir string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // the unit tier runs no kernel test
	}
	dir, err := bins.Build("..", map[string]string{"petrel": "./cmd/petrel-cni"})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	cniDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
