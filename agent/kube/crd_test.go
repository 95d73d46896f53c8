package kube

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

func applyManifest(t testing.TB, s *kubetest.Server) []string {
	t.Helper()
	done, err := kubetest.Apply(context.Background(), s.RestConfig(), filepath.Join("..", "..", "manifests", "petrel.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return done
}

func startSource(t *testing.T, ctx context.Context, s *kubetest.Server, nodeName string) *kubeSource {
	t.Helper()
	dyn := dynamic.NewForConfigOrDie(s.RestConfig())
	wait.Equal(t, 15*time.Second, "CRDs served", "", func() string {
		if err := checkAccess(ctx, dyn, "petrel-system"); err != nil {
			return err.Error()
		}
		return ""
	})
	k := newKubeSource(agentClient(t, s.RestConfig()), nodeName, "petrel-system", func() {})
	if err := k.start(ctx); err != nil {
		t.Fatal(err)
	}
	return k
}

// peersOf renders the cluster's peers for the node: address/AS, the
// prefixes the session may carry, "rr-client" for route reflector clients.
func peersOf(k *kubeSource) string {
	v, err := k.view(0)
	out := ""
	for _, p := range v.peers {
		out += fmt.Sprintf("%s/%d", p.Address, p.ASN)
		if len(p.Accept) > 0 {
			out += fmt.Sprint(p.Accept)
		}
		if p.RouteReflectorClient {
			out += "(rr-client)"
		}
		if p.Password != "" {
			out += "(md5)"
		}
		out += " "
	}
	if err != nil {
		out += "error: " + err.Error()
	}
	return out
}

var gvrs = map[string]schema.GroupVersionResource{"bgppeers": bgpPeersGVR, "bgpconfigurations": bgpConfigsGVR, "loadbalancerippools": lbPoolsGVR}

func object(kind, name string, spec map[string]any) *unstructured.Unstructured {
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": CRDGroup + "/" + CRDVersion, "kind": kind,
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
}

// TestPetrelObjects drives BGPPeer and BGPConfiguration through a real API
// server with the manifest's CRDs: every change is in the next view,
// invalid objects get Accepted=False and a Warning Event, and the valid
// ones keep working.
func TestPetrelObjects(t *testing.T) {
	s := kubetest.Start(t)
	cs := clientFor(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	applyManifest(t, s)
	for _, n := range []*corev1.Node{
		node("node1", "10.99.1.2", []string{"10.244.1.0/24"}, map[string]string{"rack": "a", "petrel.dev/rr": "true"}),
		node("node2", "10.99.2.2", []string{"10.244.2.0/24"}, map[string]string{"rack": "b"}),
		node("node3", "10.99.3.2", nil, nil), // no pod CIDR yet: not in the mesh
	} {
		createNode(t, cs, n)
	}
	k := startSource(t, ctx, s, "node1")
	dyn := dynamic.NewForConfigOrDie(s.RestConfig())
	rep, stop := newReporter(agentClient(t, s.RestConfig()), "node1")
	defer stop()
	peers := func() string {
		v, _ := k.view(0)
		if err := rep.report(ctx, v.verdicts); err != nil {
			return err.Error()
		}
		return peersOf(k)
	}
	wait.Equal(t, 15*time.Second, "the mesh alone", "10.99.2.2/64512[10.244.2.0/24] ", peers)

	bgpPeers := dyn.Resource(bgpPeersGVR)
	create := func(u *unstructured.Unstructured) {
		t.Helper()
		if _, err := dyn.Resource(gvrs[strings.ToLower(u.GetKind())+"s"]).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	create(object("BGPPeer", "tor-a", map[string]any{"peerAddress": "10.99.1.1", "peerASN": int64(65000),
		"nodeSelector": map[string]any{"matchLabels": map[string]any{"rack": "a"}}, "holdTime": "9s"}))
	create(object("BGPPeer", "tor-b", map[string]any{"peerAddress": "10.99.2.1", "peerASN": int64(65000),
		"nodeSelector": map[string]any{"matchLabels": map[string]any{"rack": "b"}}}))
	wait.Equal(t, 15*time.Second, "the rack-a ToR joins; rack b's does not select node1", "10.99.2.2/64512[10.244.2.0/24] 10.99.1.1/65000 ", peers)

	// Update: a new AS, a password from a Secret that does not exist yet.
	u, _ := bgpPeers.Get(ctx, "tor-a", metav1.GetOptions{})
	unstructured.SetNestedField(u.Object, int64(65001), "spec", "peerASN")
	unstructured.SetNestedMap(u.Object, map[string]any{"name": "tor-a", "key": "password"}, "spec", "passwordSecretRef")
	if _, err := bgpPeers.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 15*time.Second, "an update naming a missing Secret keeps the last valid version", "10.99.2.2/64512[10.244.2.0/24] 10.99.1.1/65000 ", peers)
	wait.Equal(t, 15*time.Second, "tor-a's condition", "False Invalid spec.passwordSecretRef: Secret petrel-system/tor-a: secret \"tor-a\" not found", func() string { peers(); return accepted(t, dyn, "bgppeers", "tor-a") })
	wait.Equal(t, 15*time.Second, "tor-a's Warning Event", "Warning Invalid", func() string { peers(); return eventFor(t, cs, "BGPPeer", "tor-a") })
	if _, err := cs.CoreV1().Secrets("petrel-system").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tor-a"},
		StringData: map[string]string{"password": "s3cret"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 15*time.Second, "the Secret appears: the update applies", "10.99.2.2/64512[10.244.2.0/24] 10.99.1.1/65001(md5) ", peers)
	wait.Equal(t, 15*time.Second, "tor-a accepted", "True Valid in use by petrel-agent", func() string { peers(); return accepted(t, dyn, "bgppeers", "tor-a") })

	// An invalid new object (keepalive above hold time) is reported and
	// changes nothing else.
	create(object("BGPPeer", "bad", map[string]any{"peerAddress": "10.99.9.9", "peerASN": int64(65009), "holdTime": "3s", "keepaliveTime": "9s"}))
	wait.Equal(t, 15*time.Second, "bad's condition", "False Invalid", func() string {
		peers()
		return strings.Join(strings.Fields(accepted(t, dyn, "bgppeers", "bad"))[:2], " ")
	})
	if got := peersOf(k); got != "10.99.2.2/64512[10.244.2.0/24] 10.99.1.1/65001(md5) " {
		t.Fatalf("peers with an invalid BGPPeer present: %q", got)
	}
	// The schema refuses what it can check itself.
	if _, err := bgpPeers.Create(ctx, object("BGPPeer", "refused", map[string]any{"peerAddress": "not-an-ip", "peerASN": int64(1)}), metav1.CreateOptions{}); err == nil || !strings.Contains(err.Error(), "IPv4 or IPv6") {
		t.Fatalf("a BGPPeer with peerAddress not-an-ip: %v", err)
	}

	// BGPConfiguration: the cluster AS, then route reflectors, then no mesh.
	create(object("BGPConfiguration", "default", map[string]any{"asn": int64(64600), "communities": []any{"64600:1"}}))
	wait.Equal(t, 15*time.Second, "cluster AS", "10.99.2.2/64600[10.244.2.0/24] 10.99.1.1/65001(md5) ", peers)
	if v, _ := k.view(0); v.asn != 64600 || fmt.Sprint(v.communities) != fmt.Sprint([]uint32{64600<<16 | 1}) {
		t.Fatalf("view: asn %d communities %v", v.asn, v.communities)
	}
	cfgs := dyn.Resource(bgpConfigsGVR)
	u, _ = cfgs.Get(ctx, "default", metav1.GetOptions{})
	unstructured.SetNestedMap(u.Object, map[string]any{"nodeSelector": map[string]any{"matchLabels": map[string]any{"petrel.dev/rr": "true"}}, "clusterID": "10.0.0.1"}, "spec", "routeReflectors")
	if _, err := cfgs.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 15*time.Second, "node1 reflects for node2", "10.99.2.2/64600[10.244.2.0/24](rr-client) 10.99.1.1/65001(md5) ", peers)
	if v, _ := k.view(0); !v.routeReflector || v.clusterID.String() != "10.0.0.1" {
		t.Fatalf("view: routeReflector %v clusterID %v", v.routeReflector, v.clusterID)
	}
	create(object("BGPConfiguration", "other", map[string]any{"asn": int64(1)}))
	wait.Equal(t, 15*time.Second, "a second BGPConfiguration is ignored", "False Ignored", func() string {
		peers()
		return strings.Join(strings.Fields(accepted(t, dyn, "bgpconfigurations", "other"))[:2], " ")
	})
	u, _ = cfgs.Get(ctx, "default", metav1.GetOptions{})
	unstructured.SetNestedField(u.Object, false, "spec", "nodeToNodeMesh")
	if _, err := cfgs.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 15*time.Second, "mesh off", "10.99.1.1/65001(md5) ", peers)
	// Deletions: the defaults come back.
	if err := cfgs.Delete(ctx, "default", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := bgpPeers.Delete(ctx, "tor-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	wait.Equal(t, 15*time.Second, "objects deleted", "10.99.2.2/64512[10.244.2.0/24] ", peers)
}

// accepted renders an object's Accepted condition: status, reason, message.
func accepted(t *testing.T, dyn dynamic.Interface, resource, name string) string {
	u, err := dyn.Resource(gvrs[resource]).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		return err.Error()
	}
	conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range conds {
		m := c.(map[string]any)
		if m["type"] == ConditionAccepted {
			return fmt.Sprintf("%s %s %s", m["status"], m["reason"], m["message"])
		}
	}
	return "no condition"
}

// eventFor renders the first Event about an object: type and reason.
func eventFor(t *testing.T, cs kubernetes.Interface, kind, name string) string {
	evs, err := cs.CoreV1().Events("").List(context.Background(), metav1.ListOptions{
		FieldSelector: "involvedObject.kind=" + kind + ",involvedObject.name=" + name})
	if err != nil {
		return err.Error()
	}
	if len(evs.Items) == 0 {
		return "no event"
	}
	return evs.Items[0].Type + " " + evs.Items[0].Reason
}
