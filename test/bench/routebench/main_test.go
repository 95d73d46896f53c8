package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/bins"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

var binDir string

// TestMain also plays the feeder: the benchmark starts its own executable
// with "feeder", which here is the test binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "feeder" {
		os.Exit(feeder(os.Args[2:]))
	}
	os.Exit(bins.TestMain(m, "../../..", map[string]string{"petrel-agent": "./cmd/petrel-agent"}, &binDir))
}

// TestEveryDUTTakesTheWholeTable runs the benchmark small: every device
// under test, fed the table packed and one prefix per UPDATE, and the agent
// with a policy directory, must end with every prefix in its kernel and a
// peak RSS measured. The benchmark is the judge of the route-install
// numbers; a feeder or a DUT configuration that loses routes or never
// brings the session up fails here, not in a benchmark run nobody reads.
func TestEveryDUTTakesTheWholeTable(t *testing.T) {
	netnstest.RequireRoot(t)
	netnstest.RequireTool(t, "bird")
	netnstest.RequireTool(t, filepath.Join(labtest.FRRDir, "bgpd"))
	agent := filepath.Join(binDir, "petrel-agent")
	const n = 2000
	for _, c := range []struct {
		dut    string
		pods   int
		single bool
	}{
		{"petrel", 0, false}, {"petrel", 0, true}, {"petrel", 200, false},
		{"frr", 0, false}, {"frr", 0, true},
		{"bird", 0, false}, {"bird", 0, true},
	} {
		r, err := measure(c.dut, n, agent, "", c.pods, c.single)
		if err != nil {
			t.Fatalf("%s (pods %d, one per UPDATE %v): %v", c.dut, c.pods, c.single, err)
		}
		if r.took <= 0 || r.first > r.took || r.rssKB <= 0 {
			t.Fatalf("%s (pods %d, one per UPDATE %v): %+v", c.dut, c.pods, c.single, r)
		}
		t.Logf("%s (pods %d, one per UPDATE %v): %d routes in %v", c.dut, c.pods, c.single, n, r.took)
	}
}
