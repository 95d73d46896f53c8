package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/petrelnet/petrel/bgp"
	"github.com/petrelnet/petrel/internal/runner"
)

// meshPeer is the template of node-mesh sessions: short timers and
// graceful restart, as for a ToR.
func meshPeer() bgp.Peer {
	return bgp.Peer{
		ConnectRetry: 2 * time.Second, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second,
		GracefulRestart: bgp.GracefulRestart{Enabled: true, RestartTime: 120 * time.Second},
	}
}

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
	loop := runner.New(minSyncInterval, time.Duration(c.ResyncInterval))
	src := newKubeSource(cs, nodeName, loop.Poke)
	if err := src.start(ctx); err != nil {
		return err
	}
	for logged := false; ; {
		cidrs, ip, ok := src.thisNode()
		if ok {
			c.NodeName, c.RouterID, c.PodCIDRs = nodeName, ip.String(), nil
			for _, p := range cidrs {
				c.PodCIDRs = append(c.PodCIDRs, p.String())
			}
			if n, err := src.nodes.Get(nodeName); err == nil && n.Labels[ASNLabel] != "" {
				c.ASN = nodeASN(n)
			}
			if c.ASN == 0 {
				c.ASN = DefaultASN
			}
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
	if err := c.Validate(); err != nil {
		return fmt.Errorf("config with this node's values from the cluster: %w", err)
	}
	a := &agent{cfg: c, log: log, metrics: newAgentMetrics(),
		mesh:       func() ([]bgp.Peer, error) { return src.meshPeers(meshPeer()) },
		kubePolicy: src.policyInput,
		onReady:    func(ctx context.Context) error { return markNetworkAvailable(ctx, cs, nodeName) },
	}
	return run(ctx, a, loop)
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
