package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/petrelnet/petrel/policy"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/record"
)

// ConditionAccepted is the status condition of Petrel's objects: True when
// the agents use the object, False with the reason in the message.
const ConditionAccepted = "Accepted"

// reporter writes what the agent makes of the cluster's objects back into
// the cluster: Petrel objects' status conditions, and Events for invalid
// objects and BGP session changes.
type reporter struct {
	dyn      dynamic.Interface
	events   record.EventRecorder
	node     *corev1.ObjectReference
	sessions map[netip.Addr]string // last reported state per peer
	held     map[netip.Prefix]bool // learned prefixes last reported held
	refused  map[string]string     // NetworkPolicies last reported refused, with the error
}

func newReporter(c *client, nodeName string) (*reporter, func()) {
	b := record.NewBroadcaster()
	b.StartRecordingToSink(eventSink{c.core})
	rec := b.NewRecorder(apiScheme, corev1.EventSource{Component: "petrel-agent", Host: nodeName})
	node := &corev1.ObjectReference{APIVersion: "v1", Kind: "Node", Name: nodeName, UID: "" /* set once known */}
	return &reporter{dyn: c.dyn, events: rec, node: node, sessions: map[netip.Addr]string{}, held: map[netip.Prefix]bool{}, refused: map[string]string{}}, b.Shutdown
}

type statusDoc struct {
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// report sets the Accepted condition of each object whose condition
// differs from the verdict. Every agent computes the same verdicts, so
// the first write wins and the others find nothing to change; only the
// agent whose write lands sends the Event.
func (r *reporter) report(ctx context.Context, verdicts []verdict) error {
	var errs []error
	for _, v := range verdicts {
		want := metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: "Valid",
			Message: "in use by petrel-agent", ObservedGeneration: v.obj.GetGeneration()}
		if v.err != nil {
			want.Status, want.Reason, want.Message = metav1.ConditionFalse, "Invalid", v.err.Error()
			if strings.HasPrefix(want.Message, "ignored:") {
				want.Reason = "Ignored"
			}
		}
		var st statusDoc
		if m, ok := v.obj.Object["status"].(map[string]any); ok {
			_ = runtime.DefaultUnstructuredConverter.FromUnstructured(m, &st)
		}
		had := apimeta.FindStatusCondition(st.Conditions, ConditionAccepted)
		if had != nil && had.Status == want.Status && had.Reason == want.Reason && had.Message == want.Message && had.ObservedGeneration == want.ObservedGeneration {
			continue
		}
		apimeta.SetStatusCondition(&st.Conditions, want)
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
		if err != nil {
			return err
		}
		obj := v.obj.DeepCopy()
		obj.Object["status"] = m
		_, err = r.dyn.Resource(v.gvr).UpdateStatus(ctx, obj, metav1.UpdateOptions{})
		switch {
		case apierrors.IsConflict(err) || apierrors.IsNotFound(err):
			continue // another agent wrote first, or it is gone: the next sync sees it
		case err != nil:
			errs = append(errs, fmt.Errorf("status of %s %s: %w", obj.GetKind(), obj.GetName(), err))
			continue
		}
		if v.err != nil {
			r.events.Eventf(obj, corev1.EventTypeWarning, want.Reason, "%s", want.Message)
		} else if had != nil && had.Status == metav1.ConditionFalse {
			r.events.Eventf(obj, corev1.EventTypeNormal, "Accepted", "%s is valid again and in use", obj.GetName())
		}
	}
	return errors.Join(errs...)
}

// sessionEvents sends an Event on this Node when a session comes up or goes
// down.
func (r *reporter) sessionEvents(states, sources map[netip.Addr]string) {
	for addr, st := range states {
		prev, src := r.sessions[addr], sources[addr]
		if src == "" {
			src = "config file"
		}
		switch {
		case st == "established" && prev != "established":
			r.events.Eventf(r.node, corev1.EventTypeNormal, "BGPSessionEstablished", "BGP session with %s (%s) established", addr, src)
		case st != "established" && prev == "established":
			r.events.Eventf(r.node, corev1.EventTypeWarning, "BGPSessionDown", "BGP session with %s (%s) down: %s", addr, src, st)
		}
		r.sessions[addr] = st
	}
	for addr := range r.sessions {
		if _, ok := states[addr]; !ok {
			delete(r.sessions, addr)
		}
	}
}

// heldRoutes sends a Warning Event on this Node when a learned prefix is
// kept out of the kernel by a route Petrel does not own, and a Normal one
// when it is installed after all.
func (r *reporter) heldRoutes(held []netip.Prefix) {
	now := map[netip.Prefix]bool{}
	for _, p := range held {
		now[p] = true
		if !r.held[p] {
			r.events.Eventf(r.node, corev1.EventTypeWarning, "RouteConflict",
				"learned route %s not installed: a route of another protocol holds the prefix (Petrel never replaces it)", p)
		}
	}
	for p := range r.held {
		if !now[p] {
			r.events.Eventf(r.node, corev1.EventTypeNormal, "RouteConflictResolved", "route %s is no longer held by another route", p)
		}
	}
	r.held = now
}

// refusedPolicies sends a Warning Event on each NetworkPolicy the kernel
// refused on this node (once per change of its error): its pods here are
// isolated with nothing allowed.
func (r *reporter) refusedPolicies(refused []policy.Refusal, uid func(ns, name string) types.UID) {
	now := map[string]string{}
	for _, p := range refused {
		key, msg := p.Namespace+"/"+p.Name, p.Err.Error()
		now[key] = msg
		if r.refused[key] == msg {
			continue
		}
		ref := &corev1.ObjectReference{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy",
			Namespace: p.Namespace, Name: p.Name, UID: uid(p.Namespace, p.Name)}
		r.events.Eventf(ref, corev1.EventTypeWarning, "PolicyRefused",
			"node %s: the kernel refused this policy (%s); the pods it selects are isolated, nothing allowed", r.node.Name, msg)
	}
	r.refused = now
}
