package e2e

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

func newTorLab(t *testing.T, nodes int) *labtest.TorLab { return newTorLabWith(t, nodes, "") }

// newTorLabWith adds extraConfig to every agent's config file.
func newTorLabWith(t *testing.T, nodes int, extraConfig string) *labtest.TorLab {
	netnstest.RequireRoot(t)
	netnstest.RequireTool(t, labtest.FRRDir+"/bgpd")
	l, err := labtest.NewTorLabWith(t.TempDir(), filepath.Join(binDir, "petrel-agent"), binDir, nodes, extraConfig)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

func mustPod(t *testing.T, l *labtest.TorLab, n *labtest.Node, id string) labtest.Pod {
	t.Helper()
	p, err := l.AddPod(n, id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func petrelRoutes(t *testing.T, n *labtest.Node) string {
	t.Helper()
	out, err := labtest.PetrelRoutes(n)
	if err != nil {
		t.Fatalf("ip route in %s: %v %s", n.Name, err, out)
	}
	return out
}

func wantRoutes(t *testing.T, l *labtest.TorLab, limit time.Duration) time.Duration {
	t.Helper()
	return wait.Until(t, limit, "pod CIDR routes on every node", l.RoutesComplete)
}
