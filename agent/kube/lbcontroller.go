package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

// LBLease is the Lease, in the agent's namespace, whose holder assigns
// LoadBalancer addresses: exactly one agent at a time.
const LBLease = "petrel-lb-ipam"

// lbLease are the election's timers: a new agent takes over within 15 s
// of a crash, at once after a clean exit (the lease is released).
var lbLease = leaseTimes{15 * time.Second, 10 * time.Second, 2 * time.Second}

// lbController assigns LoadBalancer addresses from the pools while this
// agent holds the lease. Everything it decides is written into the
// Services' status, so a new leader reads it back and changes nothing.
type lbController struct {
	c      *client
	k      *kubeSource
	events record.EventRecorder
	log    *slog.Logger
	// reported is each Service's last problem (or "" once it had its
	// addresses) under this leadership: an Event per change, not per round.
	reported map[string]string
	leading  atomic.Bool // holding the lease: keep it even when no longer a candidate
}

// lbCandidates is how many agents stand in the election: the nodes first by
// name that are not known to be down. Every candidate reads the Lease every
// few seconds, so a thousand agents standing would cost the API server
// hundreds of requests a second for nothing.
const lbCandidates = 3

// candidate reports whether this node is one of the election's candidates.
func (k *kubeSource) candidate() bool {
	nodes, err := k.nodes.List(labels.Everything())
	if err != nil {
		return false
	}
	return slices.Contains(candidates(nodes), k.nodeName)
}

// candidates are the first lbCandidates nodes by name whose Ready condition
// is not False or Unknown (a node whose kubelet reports nothing yet counts).
func candidates(nodes []*corev1.Node) []string {
	var names []string
	for _, n := range nodes {
		down := slices.ContainsFunc(n.Status.Conditions, func(c corev1.NodeCondition) bool {
			return c.Type == corev1.NodeReady && c.Status != corev1.ConditionTrue
		})
		if !down && n.DeletionTimestamp == nil {
			names = append(names, n.Name)
		}
	}
	slices.Sort(names)
	return names[:min(len(names), lbCandidates)]
}

// runLBElection takes part in the election while this node is a
// candidate, until ctx ends; a lost lease stops the controller and the
// agent stands again.
func runLBElection(ctx context.Context, c *lbController, identity, namespace string) {
	lock := &leaseLock{c: c.c.coordination, namespace: namespace, name: LBLease, id: identity, times: lbLease, log: c.log}
	for ctx.Err() == nil {
		if !c.k.candidate() {
			select {
			case <-ctx.Done():
			case <-time.After(lbLease.duration):
			}
			continue
		}
		ectx, stop := context.WithCancel(ctx)
		go func() { // step down from standing once no longer a candidate
			defer stop()
			for ectx.Err() == nil && (c.leading.Load() || c.k.candidate()) {
				select {
				case <-ectx.Done():
				case <-time.After(lbLease.duration):
				}
			}
		}()
		lock.elect(ectx, func(ctx context.Context) {
			c.leading.Store(true)
			c.log.Info("assigning LoadBalancer addresses (holding the lease)", "lease", namespace+"/"+LBLease)
			c.run(ctx)
			c.leading.Store(false)
			c.log.Info("no longer assigning LoadBalancer addresses", "lease", namespace+"/"+LBLease)
		})
		stop()
	}
}

// run assigns at every change of a Service or pool, and every 30 s.
func (c *lbController) run(ctx context.Context) {
	c.reported = map[string]string{}
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	for {
		if err := c.reconcile(ctx); err != nil && ctx.Err() == nil {
			c.log.Warn("LoadBalancer address assignment incomplete; retrying", "err", err)
			select {
			case c.k.lbWake <- struct{}{}:
			default:
			}
			time.Sleep(time.Second)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.k.lbWake:
		case <-tick.C:
		}
	}
}

// reconcile runs one assignment round and writes its outcome.
func (c *lbController) reconcile(ctx context.Context) error {
	pools, verdicts := c.k.pools()
	svcList, err := c.k.services.List(labels.Everything())
	if err != nil {
		return err
	}
	svcs := map[string]*corev1.Service{}
	for _, s := range svcList {
		if served(s) {
			key, _ := cache.MetaNamespaceKeyFunc(s)
			svcs[key] = s
		}
	}
	a := assignLB(pools, svcs)
	var errs []error
	for key, s := range svcs {
		errs = append(errs, c.writeService(ctx, key, s, a))
	}
	for key := range c.reported {
		if _, ok := svcs[key]; !ok {
			delete(c.reported, key)
		}
	}
	for _, v := range verdicts {
		errs = append(errs, c.writePool(ctx, v, a.used[v.obj.GetName()]))
	}
	return errors.Join(errs...)
}

func (c *lbController) writeService(ctx context.Context, key string, s *corev1.Service, a lbAssignment) error {
	want := a.addrs[key]
	if !slices.Equal(held(s), want) {
		upd := s.DeepCopy()
		upd.Status.LoadBalancer.Ingress = nil
		for _, ip := range want {
			upd.Status.LoadBalancer.Ingress = append(upd.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip.String()})
		}
		err := c.c.updateServiceStatus(ctx, upd)
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return fmt.Errorf("status of Service %s: %w", key, err)
		}
		if len(want) > 0 {
			c.events.Eventf(s, corev1.EventTypeNormal, "IPAllocated", "LoadBalancer address %s assigned", addrList(want))
		}
		c.log.Info("LoadBalancer addresses", "service", key, "was", addrList(held(s)), "now", addrList(want))
	}
	problem := a.problems[key]
	if prev, ok := c.reported[key]; (!ok && problem != "") || (ok && prev != problem) {
		if problem != "" {
			c.events.Eventf(s, corev1.EventTypeWarning, "AllocationFailed", "%s", problem)
		}
	}
	c.reported[key] = problem
	return nil
}

func addrList(as []netip.Addr) string {
	if len(as) == 0 {
		return "none"
	}
	return fmt.Sprint(as)
}

// poolStatus is a LoadBalancerIPPool's status.
type poolStatus struct {
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	Assigned   int64              `json:"assigned"`
	Free       int64              `json:"free"`
}

// writePool sets a pool's Accepted condition and its counts.
func (c *lbController) writePool(ctx context.Context, v poolVerdict, used int64) error {
	var st poolStatus
	if m, ok := v.obj.Object["status"].(map[string]any); ok {
		_ = runtime.DefaultUnstructuredConverter.FromUnstructured(m, &st)
	}
	cond := metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: "Valid",
		Message: "addresses assigned from this pool", ObservedGeneration: v.obj.GetGeneration()}
	want := poolStatus{Conditions: slices.Clone(st.Conditions), Assigned: used, Free: max(v.pool.size()-used, 0)}
	if v.err != nil {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, "Invalid", v.err.Error()
		want.Assigned, want.Free = 0, 0
	}
	had := apimeta.FindStatusCondition(st.Conditions, ConditionAccepted)
	same := had != nil && had.Status == cond.Status && had.Message == cond.Message && had.ObservedGeneration == cond.ObservedGeneration
	if same && st.Assigned == want.Assigned && st.Free == want.Free {
		return nil
	}
	apimeta.SetStatusCondition(&want.Conditions, cond)
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&want)
	if err != nil {
		return err
	}
	obj := v.obj.DeepCopy()
	obj.Object["status"] = m
	_, err = c.c.dyn.Resource(lbPoolsGVR).UpdateStatus(ctx, obj, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil // the next round sees the new version
	}
	if err == nil && !same && v.err != nil {
		c.events.Eventf(obj, corev1.EventTypeWarning, "Invalid", "%s", v.err)
	}
	return err
}

// poolVerdict is a pool as read, and what is wrong with it.
type poolVerdict struct {
	obj  *unstructured.Unstructured
	pool lbPool
	err  error
}

// pools decodes every LoadBalancerIPPool; the valid ones that overlap no
// other are used.
func (k *kubeSource) pools() ([]lbPool, []poolVerdict) {
	objs, _ := k.lbPools.List(labels.Everything())
	var vs []poolVerdict
	var valid []lbPool
	for _, o := range objs {
		u := o.(*unstructured.Unstructured)
		p, err := decodePool(u)
		vs = append(vs, poolVerdict{obj: u, pool: p, err: err})
		if err == nil {
			valid = append(valid, p)
		}
	}
	slices.SortFunc(valid, func(a, b lbPool) int { return strings.Compare(a.name, b.name) })
	bad := overlaps(valid)
	valid = slices.DeleteFunc(valid, func(p lbPool) bool { return bad[p.name] != nil })
	for i := range vs {
		if vs[i].err == nil {
			vs[i].err = bad[vs[i].obj.GetName()]
		}
	}
	return valid, vs
}
