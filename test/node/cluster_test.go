package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/petrelnet/petrel/internal/testkit/kubelab"
	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/labtest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/realnode"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

var clusterCIDRs = []string{"10.244.0.0/16", "fd00:10:244::/48"}

// cluster is the FRR ToR lab with node1 and node2 played (lab agents,
// played kubelets) and node3 a real node running Petrel's DaemonSet.
type cluster struct {
	t        *testing.T
	lab      *labtest.TorLab
	c        *kubelab.Cluster
	api      *kubetest.Server
	node     *realnode.Node
	real     *labtest.Node
	netcheck string // the test pods' server, for lab pods
}

// need fails the test in CI and skips it elsewhere when a prerequisite is
// missing.
func need(t *testing.T, path, how string) string {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s missing: %s", path, how)
		}
		t.Skipf("%s missing: %s", path, how)
	}
	return path
}

func token() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// kubectl runs the real kubectl as the cluster admin, where the API
// server is.
func (c *cluster) kubectl(args ...string) (string, error) {
	bin := filepath.Join(kubetest.BinDir(), "kubectl")
	out, err := c.lab.Mgmt.Run(bin, append([]string{"--kubeconfig", c.api.Kubeconfig}, args...)...)
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out, nil
}

// configMap is petrel-config edited as its comment asks: the cluster's
// CIDRs (this cluster is dual-stack).
const configMap = `apiVersion: v1
kind: ConfigMap
metadata: {name: petrel-config, namespace: petrel-system}
data:
  config.yaml: |
    clusterCIDRs: [10.244.0.0/16, fd00:10:244::/48]
    serviceCIDRs: [10.96.0.0/12]
    noMasqueradeCIDRs: [10.99.0.0/16, fd00:99::/32]
    listenPort: 179
    grpcAddress: unix:///var/run/petrel/gobgp.sock
    metricsAddress: 127.0.0.1:9465
`

func newCluster(t *testing.T, rt realnode.Runtime, plugins string) *cluster {
	netnstest.RequireRoot(t)
	netnstest.SkipInUnitTier(t)
	netnstest.RequireTool(t, labtest.FRRDir+"/bgpd")
	repo := kubetest.RepoRoot()
	image := need(t, filepath.Join(repo, "bin", "petrel-image.tar"), "run `make image`")
	for _, b := range []string{"kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler", "kubectl"} {
		need(t, filepath.Join(kubetest.BinDir(), b), "run test/kube/build.sh")
	}
	dir := t.TempDir()
	images, netcheck, err := realnode.BuildImages(repo, dir)
	if err != nil {
		t.Fatal(err)
	}
	l, err := labtest.NewKubeTorLab(dir, filepath.Join(binDir, "petrel-agent"), binDir, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	c := &cluster{t: t, lab: l, real: l.Nodes[2], netcheck: netcheck}
	kubeletToken := token()
	c.api = kubetest.StartInWith(t, l.Mgmt, labtest.MgmtHost, kubetest.Options{NodeTokens: map[string]string{c.real.Name: kubeletToken}})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)

	// Petrel installed as a user would: the manifest as written, then its
	// ConfigMap edited for the cluster.
	if _, err := c.kubectl("apply", "-f", filepath.Join(repo, "manifests", "petrel.yaml")); err != nil {
		t.Fatal(err)
	}
	if c.c, err = kubelab.Connect(ctx, c.api, l); err != nil {
		t.Fatal(err)
	}
	cm := filepath.Join(dir, "petrel-config.yaml")
	os.WriteFile(cm, []byte(configMap), 0o644)
	if _, err := c.kubectl("apply", "-f", cm); err != nil {
		t.Fatal(err)
	}
	if err := c.c.Apply(ctx, kubelab.BGPConfigs, "default", map[string]any{"nodeToNodeMesh": false}); err != nil {
		t.Fatal(err)
	}
	for _, n := range l.Nodes {
		if n != c.real {
			if err := c.c.RegisterNode(ctx, n); err != nil {
				t.Fatal(err)
			}
			if err := l.StartAgent(n); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.c.RegisterPeers(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	c.c.PlayKubelets(ctx, l.Nodes[0].Name, l.Nodes[1].Name)

	// The control plane a kubelet needs: node CIDRs, DaemonSets, the
	// scheduler, service-account tokens and the cluster's root CA.
	if err := c.api.StartBinary("kube-controller-manager", "--kubeconfig", c.api.Kubeconfig,
		"--allocate-node-cidrs", "--cluster-cidr", strings.Join(clusterCIDRs, ","),
		"--node-cidr-mask-size-ipv4", "24", "--node-cidr-mask-size-ipv6", "64",
		"--service-cluster-ip-range", "10.96.0.0/16,fd00:10:96::/112", "--root-ca-file", c.api.ServingCert(),
		"--service-account-private-key-file", c.api.SAKey(), "--leader-elect=false",
		"--bind-address", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	if err := c.api.StartBinary("kube-scheduler", "--kubeconfig", c.api.Kubeconfig, "--leader-elect=false",
		"--bind-address", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}

	c.node = realnode.Start(t, realnode.Config{
		Name: c.real.Name, NS: c.real.NS, NodeIPs: []string{c.real.Addr(), c.real.Addr6()},
		Labels:    map[string]string{kubelab.NodeLabel: c.real.Name, "petrel.dev/asn": fmt.Sprint(c.real.ASN())},
		APIServer: c.api.URL, KubeletToken: kubeletToken, ProxyToken: c.api.Token,
		ClusterCIDRs: clusterCIDRs, KubeBin: kubetest.BinDir(), Runtime: rt, Plugins: plugins,
		Images: append([]string{image}, images...),
	})
	t.Cleanup(func() {
		if t.Failed() {
			for _, name := range []string{"kubelet", "containerd", "kube-proxy"} {
				t.Logf("--- %s log (tail):\n%s", name, c.node.Log(name))
			}
			t.Logf("--- kube-controller-manager log (tail):\n%s", c.api.Log("kube-controller-manager"))
		}
	})
	start := time.Now()
	c.waitFor(3*time.Minute, "the real node Ready", func() (bool, string) {
		n, err := c.c.CS.CoreV1().Nodes().Get(ctx, c.real.Name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		return condition(n.Status.Conditions, corev1.NodeReady), fmt.Sprint(n.Status.Conditions)
	})
	t.Logf("%s: kubelet started -> Node Ready (Petrel's agent running there): %s", rt.Name, time.Since(start).Round(time.Millisecond))
	c.waitFor(time.Minute, "every ToR session Established", func() (bool, string) { return c.lab.Established() })
	return c
}

func condition(conds []corev1.NodeCondition, typ corev1.NodeConditionType) bool {
	for _, c := range conds {
		if c.Type == typ {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitFor waits for ok, failing the test with the last detail.
func (c *cluster) waitFor(limit time.Duration, what string, ok func() (bool, string)) time.Duration {
	c.t.Helper()
	var detail string
	var last time.Time
	d, err := wait.For(limit, what, func() bool {
		if time.Since(last) < 200*time.Millisecond {
			return false // the API server is asked at most 5 times a second
		}
		last = time.Now()
		var done bool
		done, detail = ok()
		return done
	})
	if err != nil {
		c.t.Fatalf("%v: %s", err, detail)
	}
	return d
}
