package kube

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/cache"
)

// Every agent caches every Pod and Node of the cluster, so what it keeps
// of them is the agent's memory at scale: a pod as the API server serves
// it (containers' env, mounts, probes and statuses, conditions) is several
// kilobytes in memory, a node (its image list, capacity, system info)
// more. The informers keep only the fields Petrel reads, set by these
// transforms; a new read of another field must be added here (the tests
// in trim_test.go compare what the agent derives from full and trimmed
// objects).

// podTrim and nodeTrim are the informers' transforms (a benchmark compares
// them with whole objects).
var podTrim, nodeTrim cache.TransformFunc = trimPod, trimNode

// trimPod keeps what translate.Pod and policyInput read (a Pod's identity,
// labels, addresses, host networking and named container ports) and its
// node and phase, for the logs.
func trimPod(obj any) (any, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return dropManagedFields(obj)
	}
	out := &corev1.Pod{
		ObjectMeta: keptMeta(&p.ObjectMeta, nil),
		Spec:       corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status:     corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}
	for _, c := range p.Spec.Containers {
		var named []corev1.ContainerPort
		for _, cp := range c.Ports {
			if cp.Name != "" {
				named = append(named, corev1.ContainerPort{Name: cp.Name, ContainerPort: cp.ContainerPort, Protocol: cp.Protocol})
			}
		}
		if named != nil {
			out.Spec.Containers = append(out.Spec.Containers, corev1.Container{Name: c.Name, Ports: named})
		}
	}
	return out, nil
}

// trimNode keeps a Node's identity, labels, Petrel's annotations, pod
// CIDRs, addresses and Ready condition: what the mesh, the drain and the
// LoadBalancer election read.
func trimNode(obj any) (any, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return dropManagedFields(obj)
	}
	out := &corev1.Node{
		ObjectMeta: keptMeta(&n.ObjectMeta, func(k string) bool { return strings.HasPrefix(k, "petrel.dev/") }),
		Spec:       corev1.NodeSpec{PodCIDR: n.Spec.PodCIDR, PodCIDRs: n.Spec.PodCIDRs, Unschedulable: n.Spec.Unschedulable},
		Status:     corev1.NodeStatus{Addresses: n.Status.Addresses},
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			out.Status.Conditions = []corev1.NodeCondition{{Type: c.Type, Status: c.Status, Reason: c.Reason}}
		}
	}
	return out, nil
}

// keptMeta is an object's identity and labels, and the annotations keep
// accepts (none when keep is nil).
func keptMeta(m *metav1.ObjectMeta, keep func(string) bool) metav1.ObjectMeta {
	out := metav1.ObjectMeta{Name: m.Name, Namespace: m.Namespace, UID: m.UID, ResourceVersion: m.ResourceVersion,
		Generation: m.Generation, Labels: m.Labels, DeletionTimestamp: m.DeletionTimestamp}
	for k, v := range m.Annotations {
		if keep != nil && keep(k) {
			if out.Annotations == nil {
				out.Annotations = map[string]string{}
			}
			out.Annotations[k] = v
		}
	}
	return out
}
