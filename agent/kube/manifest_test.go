package kube

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"

	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/version"
)

// The DaemonSet runs the image of this tree's version, and uses one that
// is already on the node (no registry needed); the API endpoint may come
// from an optional ConfigMap.
func TestManifestImageIsThisVersion(t *testing.T) {
	ds, err := kubetest.DaemonSet()
	if err != nil {
		t.Fatal(err)
	}
	containers := append(ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers...)
	for _, c := range containers {
		if c.Image != version.Image || c.ImagePullPolicy != corev1.PullIfNotPresent {
			t.Errorf("container %s: image %s (%s), want %s (IfNotPresent)", c.Name, c.Image, c.ImagePullPolicy, version.Image)
		}
	}
	agent := ds.Spec.Template.Spec.Containers[0]
	if len(agent.EnvFrom) != 1 || agent.EnvFrom[0].ConfigMapRef == nil || agent.EnvFrom[0].ConfigMapRef.Name != "petrel-api-endpoint" ||
		agent.EnvFrom[0].ConfigMapRef.Optional == nil || !*agent.EnvFrom[0].ConfigMapRef.Optional {
		t.Errorf("agent envFrom %+v: want the optional ConfigMap petrel-api-endpoint", agent.EnvFrom)
	}
}

// An API server that does not answer is waited for, not a reason to exit:
// the agent retries with backoff and logs once per change of the error.
func TestWaitForAccessWaitsForAnUnreachableAPI(t *testing.T) {
	dyn := dynamic.NewForConfigOrDie(&rest.Config{Host: "https://127.0.0.1:1", Timeout: time.Second})
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	ctx, cancel := context.WithTimeout(context.Background(), 3500*time.Millisecond)
	defer cancel()
	err := waitForAccess(ctx, dyn, "petrel-system", log)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("waitForAccess returned %v before giving up, want it to wait until the context ends", err)
	}
	if n := strings.Count(logs.String(), "not reachable"); n != 1 {
		t.Fatalf("logged %d times, want once for an unchanged error:\n%s", n, logs.String())
	}
}
