// Package standalone is the agent's Source without Kubernetes: the peers
// and settings of the configuration file, and NetworkPolicy input from a
// directory of YAML files (policyDir).
package standalone

import (
	"context"
	"log/slog"
	"time"

	"github.com/petrelnet/petrel/agent"
	"github.com/petrelnet/petrel/agent/config"
	"github.com/petrelnet/petrel/bgp"
	"github.com/petrelnet/petrel/internal/runner"
)

// Source serves a validated configuration file.
type Source struct {
	bgp   bgp.Config
	peers []bgp.Peer
	dir   *policyDir // nil without policyDir
}

var _ agent.Source = (*Source)(nil)

// New reads the speaker settings and peers of c, which Load validated.
func New(c *config.Config, log *slog.Logger) (*Source, error) {
	b, err := c.BGP()
	if err != nil {
		return nil, err
	}
	peers, err := c.BGPPeers()
	if err != nil {
		return nil, err
	}
	s := &Source{bgp: b, peers: peers}
	if c.PolicyDir != "" {
		s.dir = newPolicyDir(c.PolicyDir, log.With("component", "policy"))
	}
	return s, nil
}

// Start watches the policy directory.
func (s *Source) Start(ctx context.Context, poke func()) error {
	if s.dir != nil {
		go runner.Poll(ctx, 500*time.Millisecond, s.dir.fingerprint, poke)
	}
	return nil
}

// Snapshot is the file's settings and the policy directory's last good
// contents.
func (s *Source) Snapshot(context.Context) (agent.Snapshot, error) {
	snap := agent.Snapshot{BGP: s.bgp, Peers: s.peers}
	if s.dir != nil {
		snap.Namespaces, snap.Pods, snap.Policies, _ = s.dir.load()
	}
	return snap, nil
}

// Report has no one to tell: the agent's logs and metrics say it all.
func (s *Source) Report(context.Context, agent.Status) error { return nil }
