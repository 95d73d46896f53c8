package kubelab

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// PlayKubelets plays the kubelet of the named nodes (lab nodes whose agent
// the lab runs) for what the cluster's controllers put there, until ctx
// ends: each Node's Ready condition is renewed, a pod bound to one (a
// DaemonSet's) is reported Running and Ready, and a deleted one is
// removed at once — so a real node's controllers treat the lab nodes as
// nodes, and a DaemonSet rollout is not held up by them.
func (c *Cluster) PlayKubelets(ctx context.Context, nodes ...string) {
	go func() {
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for {
			for _, n := range nodes {
				c.heartbeat(ctx, n)
				c.playPods(ctx, n)
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
}

func (c *Cluster) heartbeat(ctx context.Context, name string) {
	node, err := c.CS.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return
	}
	now := metav1.Now()
	ready := corev1.NodeCondition{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
		Message: "played by the lab", LastHeartbeatTime: now, LastTransitionTime: now}
	found := false
	for i, cond := range node.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			ready.LastTransitionTime = cond.LastTransitionTime
			node.Status.Conditions[i], found = ready, true
		}
	}
	if !found {
		node.Status.Conditions = append(node.Status.Conditions, ready)
	}
	// What the scheduler places pods by.
	node.Status.Capacity = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("2"),
		corev1.ResourceMemory: resource.MustParse("4Gi"), corev1.ResourcePods: resource.MustParse("110")}
	node.Status.Allocatable = node.Status.Capacity
	c.CS.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
}

func (c *Cluster) playPods(ctx context.Context, node string) {
	pods, err := c.CS.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return
	}
	for i := range pods.Items {
		p := &pods.Items[i]
		if p.DeletionTimestamp != nil {
			zero := int64(0)
			c.CS.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: &zero})
			continue
		}
		if p.Status.Phase == corev1.PodRunning {
			continue
		}
		now := metav1.Now()
		p.Status.Phase = corev1.PodRunning
		p.Status.StartTime = &now
		p.Status.Conditions = nil
		for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
			p.Status.Conditions = append(p.Status.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
		}
		p.Status.ContainerStatuses = nil
		for _, ctr := range p.Spec.Containers {
			started := true
			p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, corev1.ContainerStatus{Name: ctr.Name, Image: ctr.Image,
				Ready: true, Started: &started, State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}})
		}
		if p.Spec.HostNetwork {
			if n, err := c.CS.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil && len(n.Status.Addresses) > 0 {
				p.Status.HostIP, p.Status.PodIP = n.Status.Addresses[0].Address, n.Status.Addresses[0].Address
				p.Status.PodIPs = []corev1.PodIP{{IP: p.Status.PodIP}}
			}
		}
		c.CS.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, p, metav1.UpdateOptions{})
	}
}
