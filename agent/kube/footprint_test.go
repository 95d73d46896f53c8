package kube

import (
	"context"
	"fmt"
	"net/netip"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/petrelnet/petrel/internal/testkit/kubetest"
)

// BenchmarkKubeSourceFootprint is the agent's heap for its informers
// against a real API server holding 10,000 pods and 200 nodes as a kubelet
// reports them (the fixtures', named and addressed apart): live once the
// caches have synced, and the peak while they sync (sampled every 2 ms),
// with the objects trimmed and whole.
func BenchmarkKubeSourceFootprint(b *testing.B) {
	const pods, nodes = 10000, 200
	s := kubetest.Start(b)
	cfg := s.RestConfig()
	cfg.QPS, cfg.Burst = 5000, 5000
	admin, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		b.Fatal(err)
	}
	applyManifest(b, s)
	populate(b, admin, pods, nodes)
	for _, c := range []struct {
		name       string
		pods, node cache.TransformFunc
	}{{"trimmed", trimPod, trimNode}, {"whole", dropManagedFields, dropManagedFields}} {
		b.Run(c.name, func(b *testing.B) {
			saved := [2]cache.TransformFunc{podTrim, nodeTrim}
			podTrim, nodeTrim = c.pods, c.node
			defer func() { podTrim, nodeTrim = saved[0], saved[1] }()
			var live, peak uint64
			for range b.N {
				ctx, cancel := context.WithCancel(context.Background())
				before := heapAfterGC()
				stop := samplePeak(&peak)
				k := newKubeSource(agentClient(b, s.RestConfig()), "worker-0", "petrel-system", func() {})
				if err := k.start(ctx); err != nil {
					b.Fatal(err)
				}
				stop()
				if got, _ := k.pods.List(labels.Everything()); len(got) != pods {
					b.Fatalf("%d pods cached, want %d", len(got), pods)
				}
				live = heapAfterGC() - before
				peak -= min(peak, before)
				cancel()
			}
			b.ReportMetric(float64(live)/1e6, "MB-live")
			b.ReportMetric(float64(peak)/1e6, "MB-peak")
		})
	}
}

// populate creates nodes and pods from the fixtures with their status,
// sixteen requests at a time.
func populate(b *testing.B, cs kubernetes.Interface, pods, nodes int) {
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}, metav1.CreateOptions{}); err != nil {
		b.Fatal(err)
	}
	node, pod := fixture[corev1.Node](b, "node"), fixture[corev1.Pod](b, "pod")
	for i := range nodes {
		n := node.DeepCopy()
		n.Name, n.ResourceVersion, n.UID = fmt.Sprintf("worker-%d", i), "", ""
		n.Spec.PodCIDR, n.Spec.PodCIDRs = fmt.Sprintf("10.%d.%d.0/24", 100+i/256, i%256), nil
		n.Spec.PodCIDRs = []string{n.Spec.PodCIDR}
		createNode(b, cs, n)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	work := make(chan int)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				p := pod.DeepCopy()
				p.Name, p.ResourceVersion, p.UID, p.OwnerReferences = fmt.Sprintf("checkout-%d", i), "", "", nil
				p.Spec.NodeName = fmt.Sprintf("worker-%d", i%nodes)
				a := netip.AddrFrom4([4]byte{10, 244, byte(i >> 8), byte(i)})
				p.Status.PodIP, p.Status.PodIPs = a.String(), []corev1.PodIP{{IP: a.String()}}
				created, err := cs.CoreV1().Pods("shop").Create(ctx, p, metav1.CreateOptions{})
				if err == nil {
					created.Status = p.Status
					_, err = cs.CoreV1().Pods("shop").UpdateStatus(ctx, created, metav1.UpdateOptions{})
				}
				if err != nil {
					select {
					case errs <- err:
					default:
					}
				}
			}
		}()
	}
	for i := range pods {
		work <- i
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
}

// samplePeak records the largest heap seen every 2 ms until stopped.
func samplePeak(peak *uint64) (stop func()) {
	*peak = 0
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
		for {
			metrics.Read(s)
			*peak = max(*peak, s[0].Value.Uint64())
			select {
			case <-done:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	return func() { close(done); <-finished }
}
