package agent

import (
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/ipam"
	"github.com/petrelnet/petrel/policy"
)

// policyState is the agent's side of nftables: where the input comes from
// and what was last compiled.
type policyState struct {
	compiler *policy.Compiler
	syncer   *policy.Syncer
	dir      *policyDir // nil without policyDir
	noMasq   []netip.Prefix
	lastFull time.Time
	last     *policy.Desired
	pending  []policy.Pod
	// The IPAM store is read only when its file changed: every read takes
	// the lock that concurrent CNI ADDs wait on.
	storeStamp string
	allocs     []ipam.Allocation
}

// syncPolicy compiles and applies masquerade and NetworkPolicy. It
// recompiles only when the input changed, and replaces the whole table once
// per resync interval, which repairs any drift (a table flushed by hand).
func (a *agent) syncPolicy() error {
	ps := a.policy
	in := policy.Input{Masquerade: *a.cfg.Masquerade, PodCIDRs: a.bgpCfg.PodCIDRs, NoMasquerade: ps.noMasq}
	changed := ps.last == nil
	if a.kubePolicy != nil {
		kin, err := a.kubePolicy()
		if err != nil {
			a.log.Warn("some NetworkPolicies are not applied", "err", err)
		}
		in.Namespaces, in.Pods, in.Policies = kin.Namespaces, kin.Pods, kin.Policies
		changed = true // the compiler's cache makes an unchanged cluster cheap
	}
	if ps.dir != nil {
		var dirChanged bool
		in.Namespaces, in.Pods, in.Policies, dirChanged = ps.dir.load()
		changed = changed || dirChanged
	}
	in.Pending = a.pendingPods(in.Pods)
	if !podsEqual(in.Pending, ps.pending) {
		changed = true
	}
	full := time.Since(ps.lastFull) >= time.Duration(a.cfg.ResyncInterval)
	if !changed && !full {
		return nil
	}
	d := ps.last
	if changed || d == nil {
		d = ps.compiler.Compile(in)
	}
	start := time.Now()
	if err := ps.syncer.Sync(d, full); err != nil {
		return err
	}
	a.metrics.policySync.Observe(time.Since(start).Seconds())
	a.log.Debug("policy synced", "full", full, "took", time.Since(start), "policies", len(in.Policies), "pods", len(in.Pods))
	ps.last, ps.pending = d, in.Pending
	if full {
		ps.lastFull = time.Now()
	}
	return nil
}

// pendingPods are this node's pods (from the IPAM store, written at CNI
// ADD) that no declared pod accounts for yet: their labels are unknown.
func (a *agent) pendingPods(known []policy.Pod) []policy.Pod {
	all := a.allocations()
	have := map[netip.Addr]bool{}
	for _, p := range known {
		for _, ip := range p.IPs {
			have[ip] = true
		}
	}
	byOwner := map[string]*policy.Pod{}
	var order []string
	for _, al := range all {
		if have[al.IP] {
			continue
		}
		k := al.ContainerID + "/" + al.IfName
		if byOwner[k] == nil {
			byOwner[k] = &policy.Pod{Namespace: al.PodNamespace, Name: al.PodName}
			order = append(order, k)
		}
		byOwner[k].IPs = append(byOwner[k].IPs, al.IP)
	}
	out := make([]policy.Pod, 0, len(order))
	for _, k := range order {
		out = append(out, *byOwner[k])
	}
	return out
}

func podsEqual(a, b []policy.Pod) bool {
	return slices.EqualFunc(a, b, func(x, y policy.Pod) bool {
		return x.Namespace == y.Namespace && x.Name == y.Name && slices.Equal(x.IPs, y.IPs)
	})
}

// allocations are the local pods' addresses from the IPAM store, re-read
// only when the store file changed.
func (a *agent) allocations() []ipam.Allocation {
	ps := a.policy
	st := fileStamp(filepath.Join(a.cfg.DataDir, ipam.StoreFile))()
	if st == ps.storeStamp {
		return ps.allocs
	}
	s, err := ipam.Open(a.cfg.DataDir, 2*time.Second)
	if err != nil {
		a.log.Warn("ipam store unreadable; keeping the last read", "err", err)
		return ps.allocs
	}
	defer s.Close()
	all, err := s.List(cni.PluginType)
	if err != nil {
		a.log.Warn("ipam store unreadable; keeping the last read", "err", err)
		return ps.allocs
	}
	ps.storeStamp, ps.allocs = st, all
	a.metrics.podAddresses.Set(float64(len(all)))
	return all
}
