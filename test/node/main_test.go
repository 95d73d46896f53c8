// Package node runs Petrel on a real Kubernetes node: a real kubelet,
// containerd and kube-proxy (internal/testkit/realnode) next to two
// played-kubelet lab nodes behind the FRR ToR, Petrel installed from its
// image with `kubectl apply -f manifests/petrel.yaml`. It needs root, FRR,
// containerd and runc (test/setup.sh), the Kubernetes binaries
// (test/kube/build.sh) and the image (`make image`).
package node

import (
	"os"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/bins"
)

var binDir string

func TestMain(m *testing.M) {
	os.Exit(bins.TestMain(m, "../..", map[string]string{"petrel-agent": "./cmd/petrel-agent", "petrel": "./cmd/petrel-cni"}, &binDir))
}
