package realnode

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// runtimeConfig is containerd's config: its root, state and socket of the
// node's own, the CRI plugin with the sandbox image the node has, the CNI
// paths of a real node, and restrict_oom_score_adj (root here lacks
// CAP_SYS_RESOURCE: runc could not lower the kubelet's sandboxes' OOM score).
func (n *Node) runtimeConfig() string {
	base := fmt.Sprintf("root = %q\nstate = %q\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n",
		filepath.Join(n.Dir, "containerd", "root"), filepath.Join(n.Dir, "containerd", "state"), n.sock, n.sock+".ttrpc")
	if n.cfg.Runtime.V2 {
		return "version = 3\n" + base + fmt.Sprintf(`[plugins."io.containerd.cri.v1.images".pinned_images]
  sandbox = %q
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
[plugins."io.containerd.cri.v1.runtime".cni]
  bin_dirs = ["/opt/cni/bin"]
  conf_dir = "/etc/cni/net.d"
`, PauseImage)
	}
	return "version = 2\n" + base + fmt.Sprintf(`[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  restrict_oom_score_adj = true
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/opt/cni/bin"
  conf_dir = "/etc/cni/net.d"
`, PauseImage)
}

func (n *Node) startRuntime() error {
	conf := filepath.Join(n.Dir, "containerd.toml")
	if err := os.WriteFile(conf, []byte(n.runtimeConfig()), 0o600); err != nil {
		return err
	}
	if err := n.daemon("containerd", n.cfg.Runtime.Containerd, "--config", conf); err != nil {
		return err
	}
	if _, err := wait.For(20*time.Second, "containerd to answer", func() bool {
		_, err := n.Ctr("version")
		return err == nil
	}); err != nil {
		return fmt.Errorf("%w\n%s", err, n.Log("containerd"))
	}
	return nil
}

// kubeconfig is a kubeconfig with a bearer token for the API server.
func (n *Node) kubeconfig(name, token string) (string, error) {
	path := filepath.Join(n.Dir, name+".kubeconfig")
	body := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: %q, insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: %q}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`, n.cfg.APIServer, token)
	return path, os.WriteFile(path, []byte(body), 0o600)
}

// kubeletConfig: cgroup v1 (this machine's hybrid) with the cgroupfs
// driver under the harness's cgroup; no image or disk eviction (a test
// machine's disk is not the node's business); the API server does not
// call back (no webhook authn/z).
func (n *Node) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /%s
containerRuntimeEndpoint: unix://%s
address: %s
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
failSwapOn: false
resolvConf: ""
evictionHard: {memory.available: "100Mi", nodefs.available: "0%%", imagefs.available: "0%%", nodefs.inodesFree: "0%%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
nodeStatusUpdateFrequency: 5s
shutdownGracePeriod: 0s
`, CgroupName, n.sock, n.cfg.NodeIPs[0])
}

func (n *Node) startKubelet() error {
	conf := filepath.Join(n.Dir, "kubelet.yaml")
	if err := os.WriteFile(conf, []byte(n.kubeletConfig()), 0o600); err != nil {
		return err
	}
	kc, err := n.kubeconfig("kubelet", n.cfg.KubeletToken)
	if err != nil {
		return err
	}
	var labels []string
	for k, v := range n.cfg.Labels {
		labels = append(labels, k+"="+v)
	}
	return n.daemon("kubelet", filepath.Join(n.cfg.KubeBin, "kubelet"), "--config", conf, "--kubeconfig", kc,
		"--hostname-override", n.cfg.Name, "--node-ip", strings.Join(n.cfg.NodeIPs, ","),
		"--node-labels", strings.Join(labels, ","), "--v", "2")
}

// startProxy runs kube-proxy in nftables mode; it leaves the machine-wide
// conntrack table size alone.
func (n *Node) startProxy() error {
	kc, err := n.kubeconfig("kube-proxy", n.cfg.ProxyToken)
	if err != nil {
		return err
	}
	conf := filepath.Join(n.Dir, "kube-proxy.yaml")
	body := kubetest.ProxyConfig(kc, n.cfg.Name, strings.Join(n.cfg.ClusterCIDRs, ","))
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		return err
	}
	return n.daemon("kube-proxy", filepath.Join(n.cfg.KubeBin, "kube-proxy"), "--config", conf, "--v", "2")
}
