// Package e2e runs Petrel's real binaries against real routers in network
// namespaces. It needs root, FRR (Debian frr) and the gobgp CLI, all
// installed by test/setup.sh.
package e2e

import (
	"os"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/bins"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(bins.TestMain(m, "../..", map[string]string{"petrel-agent": "./cmd/petrel-agent", "petrel": "./cmd/petrel-cni"}, &binDir))
}
