package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/petrelnet/petrel/internal/runner"
)

// RunKubernetes runs the agent with its identity, its node-mesh peers and
// the NetworkPolicy input taken from the cluster. It waits until this
// node's Node has spec.podCIDRs and an InternalIP. An API server outage
// leaves the dataplane as it is; the informers reconnect and resync.
func RunKubernetes(ctx context.Context, c *Config, restCfg *rest.Config, nodeName string, log *slog.Logger) error {
	if nodeName == "" {
		return fmt.Errorf("NODE_NAME: required in Kubernetes mode (from the downward API)")
	}
	cs, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	if err := checkAccess(ctx, dyn, Namespace()); err != nil {
		return err
	}
	loop := runner.New(minSyncInterval, time.Duration(c.ResyncInterval))
	src := newKubeSource(cs, dyn, nodeName, Namespace(), loop.Poke)
	if err := src.start(ctx); err != nil {
		return err
	}
	var node *corev1.Node
	var cidrs []netip.Prefix
	for logged := false; ; {
		var ip netip.Addr
		var ok bool
		cidrs, ip, ok = src.thisNode()
		if ok {
			c.NodeName, c.RouterID, c.PodCIDRs = nodeName, ip.String(), nil
			for _, p := range cidrs {
				c.PodCIDRs = append(c.PodCIDRs, p.String())
			}
			node, _ = src.nodes.Get(nodeName)
			break
		}
		if !logged {
			log.Info("waiting for this node's spec.podCIDRs and InternalIP", "node", nodeName)
			logged = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	fileASN := c.ASN
	if c.ASN == 0 {
		c.ASN = DefaultASN // replaced by the cluster's at the first sync
	}
	if err := c.Validate(); err != nil {
		return fmt.Errorf("config with this node's values from the cluster: %w", err)
	}
	rep, stopEvents := newReporter(cs, dyn, nodeName)
	defer stopEvents()
	rep.node.UID = node.UID
	ctx, exit := context.WithCancelCause(ctx)
	defer exit(nil)
	a := &agent{cfg: c, log: log, metrics: newAgentMetrics(),
		cluster: func(ctx context.Context) (clusterView, error) {
			v, err := src.view(fileASN)
			if len(v.podCIDRs) > 0 && !slices.Equal(v.podCIDRs, cidrs) {
				exit(fmt.Errorf("%w: %v, was %v: exiting to start again with them", errPodCIDRsChanged, v.podCIDRs, cidrs))
			}
			return v, errors.Join(err, rep.report(ctx, v.verdicts))
		},
		kubePolicy: src.policyInput,
		onReady:    func(ctx context.Context) error { return markNetworkAvailable(ctx, cs, nodeName) },
		onSessions: rep.sessionEvents,
	}
	err = run(ctx, a, loop)
	if cause := context.Cause(ctx); errors.Is(cause, errPodCIDRsChanged) {
		return cause
	}
	return err
}

// errPodCIDRsChanged ends the agent: the Node was given other pod CIDRs
// (deleted and registered again). Everything stays in place, as on any
// exit; the restarted agent takes the new CIDRs.
var errPodCIDRsChanged = errors.New("this node's spec.podCIDRs changed")

// checkAccess fails early, naming the fix, when Petrel's CRDs are missing
// or the agent may not read what it watches: otherwise an informer would
// wait for its first list forever.
func checkAccess(ctx context.Context, dyn dynamic.Interface, namespace string) error {
	for _, r := range []struct {
		gvr schema.GroupVersionResource
		ns  string
	}{
		{bgpPeersGVR, ""}, {bgpConfigsGVR, ""},
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
		default:
			return fmt.Errorf("list %s: %w", where, err)
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
func markNetworkAvailable(ctx context.Context, cs kubernetes.Interface, node string) error {
	now := metav1.Now()
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{
		Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse,
		Reason: "PetrelIsUp", Message: "Petrel's routes and CNI config are in place",
		LastTransitionTime: now, LastHeartbeatTime: now,
	}}}})
	_, err := cs.CoreV1().Nodes().PatchStatus(ctx, node, patch)
	if err != nil {
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
