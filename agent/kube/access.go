package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// checkAccess fails early, naming the fix, when Petrel's CRDs are missing
// or the agent may not read what it watches: otherwise an informer would
// wait for its first list forever.
func checkAccess(ctx context.Context, dyn dynamic.Interface, namespace string) error {
	for _, r := range []struct {
		gvr schema.GroupVersionResource
		ns  string
	}{
		{bgpPeersGVR, ""}, {bgpConfigsGVR, ""}, {lbPoolsGVR, ""},
		{schema.GroupVersionResource{Version: "v1", Resource: "services"}, ""},
		{schema.GroupVersionResource{Group: "discovery.k8s.io", Version: "v1", Resource: "endpointslices"}, ""},
		{schema.GroupVersionResource{Version: "v1", Resource: "nodes"}, ""},
		{schema.GroupVersionResource{Version: "v1", Resource: "pods"}, ""},
		{schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, ""},
		{schema.GroupVersionResource{Group: "networking.k8s.io", Version: "v1", Resource: "networkpolicies"}, ""},
		{schema.GroupVersionResource{Version: "v1", Resource: "secrets"}, namespace},
	} {
		_, err := dyn.Resource(r.gvr).Namespace(r.ns).List(ctx, metav1.ListOptions{Limit: 1})
		where := r.gvr.GroupResource().String()
		if r.ns != "" {
			where += " in namespace " + r.ns
		}
		switch {
		case err == nil:
		case apierrors.IsNotFound(err) && r.gvr.Group == CRDGroup:
			return fmt.Errorf("%s: the CRD is not installed (kubectl apply -f manifests/petrel.yaml)", where)
		case apierrors.IsForbidden(err):
			return fmt.Errorf("list %s: forbidden: the agent's RBAC is missing or outdated (kubectl apply -f manifests/petrel.yaml): %w", where, err)
		case apierrors.IsUnauthorized(err):
			return fmt.Errorf("list %s: the API server refuses the agent's credentials: %w", where, err)
		default:
			// No answer, a TLS error, a timeout, a 5xx: the API is not
			// reachable yet (no Service proxy at install time, an API
			// server restarting). Worth waiting for.
			return &unreachableError{fmt.Errorf("list %s: %w", where, err)}
		}
	}
	return nil
}

// Namespace is the agent's own namespace (POD_NAMESPACE from the downward
// API), where BGPPeer password Secrets live; petrel-system by default.
func Namespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return "petrel-system"
}

// markNetworkAvailable sets the Node condition NetworkUnavailable=False:
// routes and CNI config are in place.
func markNetworkAvailable(ctx context.Context, c *client, node string) error {
	now := metav1.Now()
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{
		Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse,
		Reason: "PetrelIsUp", Message: "Petrel's routes and CNI config are in place",
		LastTransitionTime: now, LastHeartbeatTime: now,
	}}}})
	if err := c.patchNodeStatus(ctx, node, patch); err != nil {
		return fmt.Errorf("set NetworkUnavailable=False on node %s: %w", node, err)
	}
	return nil
}

// RestConfig is the API server connection: from a kubeconfig file, or the
// in-cluster service account when path is empty.
func RestConfig(path string) (*rest.Config, error) {
	if path == "" {
		return rest.InClusterConfig()
	}
	return clientcmd.BuildConfigFromFlags("", path)
}

// InCluster reports whether the process runs in a pod with a service account.
func InCluster() bool { return os.Getenv("KUBERNETES_SERVICE_HOST") != "" }

// unreachableError is an API server that did not answer; the agent waits.
type unreachableError struct{ err error }

func (e *unreachableError) Error() string { return e.err.Error() }
func (e *unreachableError) Unwrap() error { return e.err }

// waitForAccess runs checkAccess until the API server answers, with a
// backoff from one second to ten, logging each change of the error.
// Missing CRDs, RBAC or credentials end it at once: waiting cannot fix them.
func waitForAccess(ctx context.Context, dyn dynamic.Interface, namespace string, log *slog.Logger) error {
	var last string
	for wait := time.Second; ; wait = min(2*wait, 10*time.Second) {
		err := checkAccess(ctx, dyn, namespace)
		var u *unreachableError
		if !errors.As(err, &u) {
			if err == nil && last != "" {
				log.Info("the API server answers")
			}
			return err
		}
		if msg := err.Error(); msg != last {
			log.Warn("the API server is not reachable; waiting (not ready)", "err", err,
				"hint", "without a Service proxy, set KUBERNETES_SERVICE_HOST/PORT in the ConfigMap petrel-api-endpoint")
			last = msg
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}
