package kube

import (
	"context"
	"fmt"
	"os"
	"reflect"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	"github.com/petrelnet/petrel/agent/translate"
	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// fixture decodes testdata/<name>.json (an object as the API server serves
// it, with the kubelet's status) with the agent's own codecs.
func fixture[T any](t testing.TB, name string) *T {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name + ".json")
	if err != nil {
		t.Fatal(err)
	}
	obj, _, err := apiCodecs.UniversalDeserializer().Decode(b, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, ok := any(obj).(*T)
	if !ok {
		t.Fatalf("%s: %T", name, obj)
	}
	return out
}

func trimmed[T any](t testing.TB, trim cache.TransformFunc, obj *T) *T {
	t.Helper()
	out, err := trim(obj)
	if err != nil {
		t.Fatal(err)
	}
	return out.(*T)
}

// TestTrimKeepsWhatPetrelReads derives what the agent derives from full
// and from trimmed objects, for pods and nodes in the states it tells
// apart.
func TestTrimKeepsWhatPetrelReads(t *testing.T) {
	pod := fixture[corev1.Pod](t, "pod")
	host := pod.DeepCopy()
	host.Spec.HostNetwork = true
	unnamed := pod.DeepCopy()
	for i := range unnamed.Spec.Containers {
		for j := range unnamed.Spec.Containers[i].Ports {
			unnamed.Spec.Containers[i].Ports[j].Name = ""
		}
	}
	pending := pod.DeepCopy()
	pending.Status = corev1.PodStatus{Phase: corev1.PodPending}
	for _, p := range []*corev1.Pod{pod, host, unnamed, pending} {
		tp := trimmed(t, trimPod, p)
		if got, want := translate.Pod(tp), translate.Pod(p); !reflect.DeepEqual(got, want) {
			t.Errorf("translate.Pod: trimmed %+v, full %+v", got, want)
		}
		if tp.Spec.HostNetwork != p.Spec.HostNetwork || tp.UID != p.UID || tp.ResourceVersion != p.ResourceVersion {
			t.Errorf("trimmed pod lost its identity or host networking: %+v", tp.ObjectMeta)
		}
		k1, _ := cache.MetaNamespaceKeyFunc(p)
		if k2, _ := cache.MetaNamespaceKeyFunc(tp); k1 != k2 {
			t.Errorf("cache key %q, want %q", k2, k1)
		}
	}
	if n := len(translate.Pod(pod).Ports); n != 4 {
		t.Fatalf("the fixture's named ports: %d, want 4 (a fixture that tests nothing)", n)
	}

	node := fixture[corev1.Node](t, "node")
	down := node.DeepCopy()
	for i := range down.Status.Conditions {
		if down.Status.Conditions[i].Type == corev1.NodeReady {
			down.Status.Conditions[i].Status = corev1.ConditionUnknown
		}
	}
	plain := node.DeepCopy()
	plain.Annotations, plain.Labels = nil, map[string]string{"kubernetes.io/hostname": "worker-17"}
	gone := node.DeepCopy()
	gone.DeletionTimestamp = &metav1.Time{}
	for _, n := range []*corev1.Node{node, down, plain, gone} {
		tn := trimmed(t, trimNode, n)
		for _, c := range []struct {
			what      string
			got, want any
		}{
			{"podCIDRs", podCIDRs(tn), podCIDRs(n)},
			{"internalIPs", internalIPs(tn), internalIPs(n)},
			{"nodeASN", nodeASN(tn, 64512), nodeASN(n, 64512)},
			{"drain", tn.Annotations[DrainAnnotation], n.Annotations[DrainAnnotation]},
			{"candidates", candidates([]*corev1.Node{tn}), candidates([]*corev1.Node{n})},
			{"labels", tn.Labels, n.Labels},
			{"uid", tn.UID, n.UID},
		} {
			if !reflect.DeepEqual(c.got, c.want) {
				t.Errorf("node %s: %s from the trimmed node %v, from the full one %v", n.Name, c.what, c.got, c.want)
			}
		}
	}
	if len(podCIDRs(node)) != 2 || len(internalIPs(node)) != 2 || node.Annotations[DrainAnnotation] != "true" || len(candidates([]*corev1.Node{down})) != 0 {
		t.Fatal("the node fixture does not exercise what it should")
	}
	if got := len(trimmed(t, trimNode, node).Annotations); got != 1 {
		t.Errorf("trimmed node kept %d annotations, want only Petrel's one", got)
	}
}

// TestInformersCacheTrimmedObjects checks the wiring against a real API
// server: the cached Pod and Node are the trimmed ones, and the policy
// input and this node's values come out as from the whole objects.
func TestInformersCacheTrimmedObjects(t *testing.T) {
	s := kubetest.Start(t)
	cs := clientFor(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := fixture[corev1.Node](t, "node")
	n.ResourceVersion, n.UID = "", ""
	createNode(t, cs, n)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := fixture[corev1.Pod](t, "pod")
	p.ResourceVersion, p.UID, p.OwnerReferences = "", "", nil
	created, err := cs.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status = p.Status
	full, err := cs.CoreV1().Pods("shop").UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	applyManifest(t, s)
	k := startSource(t, ctx, s, n.Name)

	var cached *corev1.Pod
	wait.Equal(t, 15*time.Second, "the pod's status in the cache", "2", func() string {
		cached, err = k.pods.Pods("shop").Get(p.Name)
		if err != nil {
			return err.Error()
		}
		return fmt.Sprint(len(cached.Status.PodIPs))
	})
	if len(full.Spec.Containers[0].Env) == 0 || len(full.Status.ContainerStatuses) == 0 {
		t.Fatal("the API server's pod has no env or container statuses: nothing to trim")
	}
	if len(cached.Spec.Containers[0].Env) != 0 || len(cached.Status.ContainerStatuses) != 0 || len(cached.Spec.Volumes) != 0 {
		t.Errorf("the cached pod is whole: %d env, %d container statuses, %d volumes",
			len(cached.Spec.Containers[0].Env), len(cached.Status.ContainerStatuses), len(cached.Spec.Volumes))
	}
	in, err := k.policyInput()
	if err != nil || len(in.Pods) != 1 || !reflect.DeepEqual(in.Pods[0], translate.Pod(full)) {
		t.Errorf("policy input %+v (%v), want %+v", in.Pods, err, translate.Pod(full))
	}
	node, err := k.nodes.Get(n.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(node.Status.Images) != 0 || node.Status.NodeInfo.KubeletVersion != "" {
		t.Errorf("the cached node is whole: %d images, kubelet %q", len(node.Status.Images), node.Status.NodeInfo.KubeletVersion)
	}
	cidrs, ip, ok := k.thisNode()
	if !ok || fmt.Sprint(cidrs) != "[10.244.17.0/24 fd00:244:17::/64]" || ip.String() != "10.20.4.17" {
		t.Errorf("this node from the cache: %v %v %v", cidrs, ip, ok)
	}
}

// BenchmarkInformerFootprint is the heap an informer's cache keeps per
// object, whole (managed fields dropped, as before) and trimmed: at
// 10,000 pods and 1,000 nodes, the difference is the agent's memory at
// scale on every node.
func BenchmarkInformerFootprint(b *testing.B) {
	const n = 5000
	for _, c := range []struct {
		kind string
		trim cache.TransformFunc
		make func(i int) any
	}{
		{"pod/whole", dropManagedFields, podMaker(b)},
		{"pod/trimmed", trimPod, podMaker(b)},
		{"node/whole", dropManagedFields, nodeMaker(b)},
		{"node/trimmed", trimNode, nodeMaker(b)},
	} {
		b.Run(c.kind, func(b *testing.B) {
			var per float64
			for range b.N {
				store := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
				before := heapAfterGC()
				for i := range n {
					obj, _ := c.trim(c.make(i))
					_ = store.Add(obj)
				}
				per = float64(heapAfterGC()-before) / n
				runtime.KeepAlive(store)
			}
			b.ReportMetric(per, "B/object")
		})
	}
}

// podMaker and nodeMaker decode a fresh object per call, as the informer
// does, named apart so that each is cached.
func podMaker(b *testing.B) func(int) any {
	raw, err := os.ReadFile("testdata/pod.json")
	if err != nil {
		b.Fatal(err)
	}
	return func(i int) any {
		obj, _, err := apiCodecs.UniversalDeserializer().Decode(raw, nil, nil)
		if err != nil {
			b.Fatal(err)
		}
		p := obj.(*corev1.Pod)
		p.Name = fmt.Sprintf("%s-%d", p.Name, i)
		return p
	}
}

func nodeMaker(b *testing.B) func(int) any {
	raw, err := os.ReadFile("testdata/node.json")
	if err != nil {
		b.Fatal(err)
	}
	gvk := schema.GroupVersionKind{Version: "v1", Kind: "Node"}
	return func(i int) any {
		obj, _, err := apiCodecs.UniversalDeserializer().Decode(raw, &gvk, nil)
		if err != nil {
			b.Fatal(err)
		}
		n := obj.(*corev1.Node)
		n.Name = fmt.Sprintf("%s-%d", n.Name, i)
		return n
	}
}

func heapAfterGC() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
