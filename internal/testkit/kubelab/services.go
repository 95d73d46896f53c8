package kubelab

import (
	"context"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/util/retry"

	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
)

// Services in the lab are real: the controller-manager's EndpointSlice
// controller turns ready pods into endpoints, and a real kube-proxy on
// every node (nftables mode, beside Petrel's table) delivers a Service
// address to them.

// LBPools is Petrel's LoadBalancerIPPool resource.
var LBPools = schema.GroupVersionResource{Group: "petrel.dev", Version: "v1alpha1", Resource: "loadbalancerippools"}

// ClusterCIDRs are the lab's pod addresses, for kube-proxy.
const ClusterCIDRs = "10.244.0.0/16,fd00:10:244::/48"

// StartEndpointSlices runs kube-controller-manager beside the API server
// with the EndpointSlice controller only.
func (c *Cluster) StartEndpointSlices() error {
	return c.API.StartBinary("kube-controller-manager", "--kubeconfig", c.API.Kubeconfig,
		"--controllers", "endpointslice", "--leader-elect=false", "--bind-address", "127.0.0.1",
		"--service-cluster-ip-range", "10.96.0.0/16,fd00:10:96::/112")
}

// StartProxies runs kube-proxy on every node of the lab (as the cluster
// admin); the caller stops them with their Signal.
func (c *Cluster) StartProxies(l *labtest.TorLab) ([]*labtest.Proc, error) {
	var out []*labtest.Proc
	for _, n := range l.Nodes {
		conf := filepath.Join(n.Dir, "kube-proxy.yaml")
		body := kubetest.ProxyConfig(c.API.Kubeconfig, n.Name, ClusterCIDRs)
		if err := os.MkdirAll(n.Dir, 0o755); err != nil {
			return out, err
		}
		if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
			return out, err
		}
		p, err := labtest.StartProc(n.NS, filepath.Join(n.Dir, "kube-proxy.log"),
			filepath.Join(kubetest.BinDir(), "kube-proxy"), "--config", conf, "--v", "2")
		if err != nil {
			return out, err
		}
		out = append(out, p)
	}
	return out, nil
}

// SetPodReady reports a pod's readiness as the kubelet's probe would:
// Running, with Ready and ContainersReady true or false.
func (c *Cluster) SetPodReady(ctx context.Context, name string, ready bool) error {
	pods := c.CS.CoreV1().Pods("default")
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.NewTime(time.Now())
		p.Status.Phase = corev1.PodRunning
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now}}
		for _, t := range []corev1.PodConditionType{corev1.ContainersReady, corev1.PodReady} {
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: t, Status: st, LastTransitionTime: now})
		}
		_, err = pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
		return err
	})
}
