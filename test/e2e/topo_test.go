package e2e

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/petrelnet/petrel/internal/labtest"
	"github.com/petrelnet/petrel/internal/netnstest"
)

func mustIP(t *testing.T, ns netnstest.NS, args ...string) {
	t.Helper()
	if err := labtest.Run(ns, "ip", args...); err != nil {
		t.Fatal(err)
	}
}

func newTorLab(t *testing.T, nodes int) *labtest.TorLab {
	netnstest.RequireRoot(t)
	netnstest.RequireTool(t, labtest.FRRDir+"/bgpd")
	l, err := labtest.NewTorLab(t.TempDir(), filepath.Join(binDir, "petrel-agent"), binDir, nodes)
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

// waitUntil polls cond every 10 ms and returns how long it took.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	d, err := labtest.WaitFor(limit, what, cond)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func wantRoutes(t *testing.T, l *labtest.TorLab, limit time.Duration) time.Duration {
	t.Helper()
	return waitUntil(t, limit, "pod CIDR routes on every node", l.RoutesComplete)
}
