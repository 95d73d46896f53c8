package policy_test

import (
	"os"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/bins"
)

// cniDir holds the real CNI plugin, built once: the kernel tests wire their
// pods with it, as a container runtime would.
var cniDir string

func TestMain(m *testing.M) {
	os.Exit(bins.TestMain(m, "..", map[string]string{"petrel": "./cmd/petrel-cni"}, &cniDir))
}
