package kube

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/petrelnet/petrel/agent/config"
	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

const agentSA = "system:serviceaccount:petrel-system:petrel-agent"

// TestManifestRBAC checks the manifest's ClusterRole and Role from both
// sides: the agent's service account can do everything the agent does
// (the agent's own code runs as that account here), and an access review
// of every verb on every resource the agent could plausibly touch allows
// exactly the agent's needs, nothing more.
func TestManifestRBAC(t *testing.T) {
	s := kubetest.Start(t)
	admin := clientFor(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	applyManifest(t, s)
	// Applied a second time (an upgrade): accepted again, all of it.
	got := strings.Join(applyManifest(t, s), " ")
	if want := "Namespace/petrel-system ServiceAccount/petrel-agent ClusterRole/petrel-agent ClusterRoleBinding/petrel-agent Role/petrel-agent RoleBinding/petrel-agent " +
		"CustomResourceDefinition/bgppeers.petrel.dev CustomResourceDefinition/bgpconfigurations.petrel.dev CustomResourceDefinition/loadbalancerippools.petrel.dev " +
		"ConfigMap/petrel-config DaemonSet/petrel-agent"; got != want {
		t.Fatalf("applied %s\nwant %s", got, want)
	}
	// The shipped config file is one the agent accepts.
	cm, err := admin.CoreV1().ConfigMaps("petrel-system").Get(ctx, "petrel-config", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(path, []byte(cm.Data["config.yaml"]), 0o644)
	if _, err := config.LoadKubernetes(path); err != nil {
		t.Fatalf("the manifest's config: %v", err)
	}
	createNode(t, admin, node("node1", "10.99.1.2", []string{"10.244.1.0/24"}, nil))
	adminDyn := dynamic.NewForConfigOrDie(s.RestConfig())
	if _, err := adminDyn.Resource(bgpPeersGVR).Create(ctx, object("BGPPeer", "bad", map[string]any{"peerAddress": "10.0.0.1", "peerASN": int64(1), "holdTime": "3s", "keepaliveTime": "9s"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Everything the agent does, as the service account.
	cfg := s.RestConfig()
	cfg.Impersonate.UserName = agentSA
	cfg.Impersonate.Groups = []string{"system:serviceaccounts", "system:serviceaccounts:petrel-system", "system:authenticated"}
	cs := kubernetes.NewForConfigOrDie(cfg)
	dyn := dynamic.NewForConfigOrDie(cfg)
	wait.Equal(t, 15*time.Second, "CRDs served to the agent", "", func() string {
		if err := checkAccess(ctx, dyn, "petrel-system"); err != nil {
			return err.Error()
		}
		return ""
	})
	ac := agentClient(t, cfg)
	k := newKubeSource(ac, "node1", "petrel-system", func() {})
	if err := k.start(ctx); err != nil { // list+watch of every informer
		t.Fatal(err)
	}
	if _, err := k.policyInput(); err != nil {
		t.Fatal(err)
	}
	v, err := k.view(0)
	if err != nil {
		t.Fatal(err)
	}
	rep, stop := newReporter(ac, "node1")
	defer stop()
	if err := rep.report(ctx, v.verdicts); err != nil {
		t.Fatalf("status update as the agent: %v", err)
	}
	if err := markNetworkAvailable(ctx, ac, "node1"); err != nil {
		t.Fatalf("node condition as the agent: %v", err)
	}
	if _, err := cs.CoreV1().Events("default").Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "petrel-"},
		InvolvedObject: corev1.ObjectReference{Kind: "Node", Name: "node1"}, Reason: "Test", Type: "Normal"}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("event as the agent: %v", err)
	}
	wait.Equal(t, 15*time.Second, "the recorder's Event, sent as the agent", "Warning Invalid", func() string { return eventFor(t, admin, "BGPPeer", "bad") })

	// Nothing more.
	want := map[string]bool{}
	for _, g := range []string{
		"list nodes", "watch nodes", "patch nodes/status",
		"list pods", "watch pods", "list namespaces", "watch namespaces",
		"list networkpolicies", "watch networkpolicies",
		"list bgppeers", "watch bgppeers", "update bgppeers/status",
		"list bgpconfigurations", "watch bgpconfigurations", "update bgpconfigurations/status",
		"create events", "patch events",
		"list services", "watch services", "update services/status", "list endpointslices", "watch endpointslices",
		"list loadbalancerippools", "watch loadbalancerippools", "update loadbalancerippools/status",
	} {
		for _, ns := range []string{"", "default", "petrel-system"} {
			want[g+" ns="+ns] = true
		}
	}
	want["list secrets ns=petrel-system"], want["watch secrets ns=petrel-system"] = true, true
	want["create leases ns=petrel-system"] = true // get and update only the election's Lease, checked below
	groups := map[string]string{"networkpolicies": "networking.k8s.io", "bgppeers": CRDGroup, "bgpconfigurations": CRDGroup, "daemonsets": "apps",
		"clusterroles": "rbac.authorization.k8s.io", "loadbalancerippools": CRDGroup, "endpointslices": "discovery.k8s.io", "leases": "coordination.k8s.io"}
	var unexpected []string
	for _, res := range []string{"nodes", "nodes/status", "pods", "pods/status", "pods/exec", "namespaces", "networkpolicies", "bgppeers", "bgppeers/status",
		"bgpconfigurations", "bgpconfigurations/status", "events", "secrets", "configmaps", "services", "services/status", "endpoints", "endpointslices",
		"loadbalancerippools", "loadbalancerippools/status", "leases", "serviceaccounts", "daemonsets", "clusterroles"} {
		for _, verb := range []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"} {
			for _, ns := range []string{"", "default", "petrel-system"} {
				r, sub, _ := strings.Cut(res, "/")
				sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{User: agentSA, Groups: cfg.Impersonate.Groups,
					ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Group: groups[r], Resource: r, Subresource: sub, Namespace: ns}}}
				got, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
				if err != nil {
					t.Fatal(err)
				}
				key := fmt.Sprintf("%s %s ns=%s", verb, res, ns)
				if got.Status.Allowed != want[key] {
					unexpected = append(unexpected, fmt.Sprintf("%s: allowed=%v", key, got.Status.Allowed))
				}
			}
		}
	}
	// The election's Lease by name: get and update, in Petrel's namespace only.
	for _, verb := range []string{"get", "update", "delete", "patch"} {
		for _, ns := range []string{"petrel-system", "default"} {
			sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{User: agentSA, Groups: cfg.Impersonate.Groups,
				ResourceAttributes: &authzv1.ResourceAttributes{Verb: verb, Group: "coordination.k8s.io", Resource: "leases", Name: LBLease, Namespace: ns}}}
			got, err := admin.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if want := ns == "petrel-system" && (verb == "get" || verb == "update"); got.Status.Allowed != want {
				unexpected = append(unexpected, fmt.Sprintf("%s leases/%s ns=%s: allowed=%v", verb, LBLease, ns, got.Status.Allowed))
			}
		}
	}
	slices.Sort(unexpected)
	if len(unexpected) > 0 {
		t.Fatalf("the agent's RBAC differs from its needs:\n%s", strings.Join(unexpected, "\n"))
	}
}
