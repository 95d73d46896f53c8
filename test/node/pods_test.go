package node

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/realnode"
)

// testNS holds the real node's test pods.
const testNS = "realnode"

// netcheckPod is a pod on the real node serving netcheck on 8080, with a
// readiness probe the kubelet runs from the node every second.
func (c *cluster) netcheckPod(name string, labels map[string]string) *corev1.Pod {
	no := false
	grace := int64(2)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS, Labels: labels},
		Spec: corev1.PodSpec{
			NodeName: c.real.Name, AutomountServiceAccountToken: &no, TerminationGracePeriodSeconds: &grace,
			Containers: []corev1.Container{{
				Name: "netcheck", Image: realnode.NetcheckImage, ImagePullPolicy: corev1.PullNever,
				Ports: []corev1.ContainerPort{{ContainerPort: 8080}},
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}},
			}},
		},
	}
}

// createPods creates the pods and waits until each is Ready with its
// addresses; it returns them as the API server has them.
func (c *cluster) createPods(limit time.Duration, pods ...*corev1.Pod) []*corev1.Pod {
	c.t.Helper()
	ctx := context.Background()
	for _, p := range pods {
		if _, err := c.c.CS.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			c.t.Fatal(err)
		}
	}
	out := make([]*corev1.Pod, len(pods))
	c.waitFor(limit, fmt.Sprintf("%d pods Ready", len(pods)), func() (bool, string) {
		list, err := c.c.CS.CoreV1().Pods(testNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		byName := map[string]*corev1.Pod{}
		for i := range list.Items {
			byName[list.Items[i].Name] = &list.Items[i]
		}
		for i, want := range pods {
			p := byName[want.Name]
			if p == nil || !podReady(p) || len(p.Status.PodIPs) == 0 {
				return false, fmt.Sprintf("%s: %s", want.Name, describe(p))
			}
			out[i] = p
		}
		return true, ""
	})
	return out
}

func podReady(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

func describe(p *corev1.Pod) string {
	if p == nil {
		return "not listed"
	}
	s := fmt.Sprintf("phase %s IPs %v", p.Status.Phase, p.Status.PodIPs)
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil {
			s += fmt.Sprintf(" %s waiting: %s %s", cs.Name, w.Reason, w.Message)
		}
	}
	for _, cond := range p.Status.Conditions {
		if cond.Status != corev1.ConditionTrue && cond.Message != "" {
			s += fmt.Sprintf(" %s: %s", cond.Type, cond.Message)
		}
	}
	return s
}

// deletePods deletes the pods and waits until the API server has none of
// them.
func (c *cluster) deletePods(limit time.Duration, names ...string) {
	c.t.Helper()
	ctx := context.Background()
	for _, n := range names {
		if err := c.c.CS.CoreV1().Pods(testNS).Delete(ctx, n, metav1.DeleteOptions{}); err != nil {
			c.t.Fatal(err)
		}
	}
	c.waitFor(limit, fmt.Sprintf("%d pods gone", len(names)), func() (bool, string) {
		list, err := c.c.CS.CoreV1().Pods(testNS).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err.Error()
		}
		left := map[string]bool{}
		for _, p := range list.Items {
			left[p.Name] = true
		}
		for _, n := range names {
			if left[n] {
				return false, n + " still there"
			}
		}
		return true, ""
	})
}

// ips are a pod's IPv4 and IPv6 addresses.
func ips(p *corev1.Pod) (v4, v6 string) {
	for _, a := range p.Status.PodIPs {
		if strings.Contains(a.IP, ":") {
			v6 = a.IP
		} else {
			v4 = a.IP
		}
	}
	return v4, v6
}

// get fetches http://addr/path from inside ns.
func get(ns netnstest.NS, addr, path string) (string, error) {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		var conn net.Conn
		err := ns.Do(func() (err error) {
			conn, err = (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, network, a)
			return err
		})
		return conn, err
	}}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + addr + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("%s%s: %s: %s", addr, path, resp.Status, strings.TrimSpace(string(b)))
	}
	return strings.TrimSpace(string(b)), nil
}

// hostPort joins an address and a port (brackets for IPv6).
func hostPort(ip string, port int) string { return net.JoinHostPort(ip, fmt.Sprint(port)) }

// dial asks the netcheck pod at from (an address) to fetch to's root.
func (c *cluster) dial(from, to string) (string, error) {
	return get(c.real.NS, hostPort(from, 8080), "/dial?addr="+to)
}

// inCIDRs reports whether ip is in one of cidrs.
func inCIDRs(ip string, cidrs []string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	for _, c := range cidrs {
		if p, err := netip.ParsePrefix(c); err == nil && p.Contains(a) {
			return true
		}
	}
	return false
}

// serve runs the netcheck server in a lab pod's namespace until the test
// ends.
func (c *cluster) serve(ns netnstest.NS) {
	cmd := exec.Command(c.netcheck, "-listen", ":8080")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := ns.Start(cmd); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}
