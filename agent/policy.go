package agent

import (
	"net/netip"
	"path/filepath"
	"time"

	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/internal/runner"
	"github.com/petrelnet/petrel/ipam"
	"github.com/petrelnet/petrel/policy"
)

// policyState is the loop's side of nftables.
type policyState struct {
	refused map[string]string // "namespace/name" -> the kernel's error, as last reported
	// The IPAM store is read only when its file changed: every read takes
	// the lock that concurrent CNI ADDs wait on.
	storeStamp string
	allocs     []ipam.Allocation
}

// syncPolicy hands masquerade and NetworkPolicy input to the Firewall,
// which compiles only what changed and decides whether that replaces its
// table or changes only what differs.
func (a *agent) syncPolicy(snap Snapshot, pods []netip.Prefix) error {
	noMasq, _ := a.cfg.NoMasquerade() // validated at load
	in := policy.Input{Masquerade: *a.cfg.Masquerade, PodCIDRs: pods, NoMasquerade: noMasq,
		Namespaces: snap.Namespaces, Pods: snap.Pods, Policies: snap.Policies}
	in.Pending = a.pendingPods(in.Pods)
	start := time.Now()
	refused, err := a.dp.Firewall.Sync(in)
	a.reportRefused(refused)
	if err != nil {
		return err
	}
	a.metrics.policySync.Observe(time.Since(start).Seconds())
	return nil
}

// reportRefused logs each change of the set of refused policies and keeps
// the metric and the source's view current.
func (a *agent) reportRefused(refused []policy.Refusal) {
	now := map[string]string{}
	for _, r := range refused {
		key := r.Namespace + "/" + r.Name
		now[key] = r.Err.Error()
		if a.policy.refused[key] != now[key] {
			a.log.Error("NetworkPolicy refused by the kernel: the pods it selects are isolated, nothing allowed", "policy", key, "err", r.Err)
		}
	}
	for key := range a.policy.refused {
		if _, still := now[key]; !still {
			a.log.Info("NetworkPolicy applied again", "policy", key)
		}
	}
	a.policy.refused = now
	a.metrics.setRefused(refused)
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

// allocations are the local pods' addresses from the IPAM store, re-read
// only when the store file changed.
func (a *agent) allocations() []ipam.Allocation {
	ps := &a.policy
	st := runner.FileStamp(filepath.Join(a.cfg.DataDir, ipam.StoreFile))()
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
