// Package realnode runs a real Kubernetes node for tests: containerd and
// runc, the kubelet and kube-proxy, in a lab node's network namespace and
// a mount namespace of their own, so the node's /etc/cni/net.d,
// /opt/cni/bin, /var/lib and /var/log are directories of the test while
// every path is the one a real node uses (the manifest's hostPath volumes
// work as written). Machine-wide state it cannot keep private — cgroups
// and the kubelet's kernel settings — is recorded, restored at the end and
// also after a killed run (host.go): one real node per machine at a time.
package realnode

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// PauseImage is the sandbox image the runtime is configured with
// (Images builds it).
const PauseImage = "petrel.test/pause:1"

// Runtime is a containerd build.
type Runtime struct {
	Name       string // for messages: "containerd 1.6 (Debian)"
	Containerd string // the daemon
	Ctr        string // its client
	// V2 is containerd 2.x (config version 3); false is 1.6/1.7.
	V2 bool
	// ShimDir holds the containerd-shim-runc-v2 of the same build ("": the
	// one on PATH).
	ShimDir string
}

// Config describes the node.
type Config struct {
	Name    string
	NS      netnstest.NS // the node's network namespace
	NodeIPs []string     // --node-ip: its InternalIPs, IPv4 first
	Labels  map[string]string
	// APIServer is the API server's URL as the node reaches it; tokens are
	// the kubelet's (system:node:<Name>) and kube-proxy's.
	APIServer, KubeletToken, ProxyToken string
	ClusterCIDRs                        []string
	KubeBin                             string // kubelet and kube-proxy
	Runtime                             Runtime
	// Plugins: a directory whose files the node has in /opt/cni/bin before
	// anything is installed (a distribution's reference plugins), or "".
	Plugins string
	Images  []string // OCI archives imported before the kubelet starts
}

// Node is a running node.
type Node struct {
	cfg    Config
	Dir    string // the node's files: root/ holds what it sees at / paths
	sock   string
	holder *exec.Cmd
	procs  map[string]*exec.Cmd
	exited map[string]chan struct{}
	lock   *os.File // host.go's lockFile, held while the node exists
}

// Root is the test directory behind a node path (/etc/cni/net.d,
// /opt/cni/bin, /var/lib/..., /var/log/...).
func (n *Node) Root(path string) string { return filepath.Join(n.Dir, "root", path) }

// private are the node's own directories: mounted over the machine's in
// the node's mount namespace.
var private = []string{"/etc/cni/net.d", "/opt", "/var/lib", "/var/log", "/run/netns"}

// Start brings the node up and registers its teardown; the kubelet joins
// the cluster (the caller waits for what it needs). Its files (logs, pod
// logs under root/var/log/pods) are kept when the test fails or
// PETREL_KEEP_NODE is set.
func Start(t testing.TB, cfg Config) *Node {
	t.Helper()
	netnstest.RequireRoot(t)
	for _, tool := range []string{"runc", "unshare", "nsenter", "nft"} {
		netnstest.RequireTool(t, tool)
	}
	// Short: containerd's socket path must fit in a sockaddr_un.
	dir, err := os.MkdirTemp("", "realnode")
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: cfg, Dir: dir, sock: filepath.Join(dir, "containerd.sock"), procs: map[string]*exec.Cmd{}, exited: map[string]chan struct{}{}}
	if n.lock, err = lockHost(); err != nil {
		t.Fatal(err)
	}
	if err := claimHost(); err != nil {
		n.lock.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.stop(); err != nil {
			t.Errorf("real node teardown: %v", err)
		}
		if !t.Failed() && os.Getenv("PETREL_KEEP_NODE") == "" {
			os.RemoveAll(dir)
		} else {
			t.Logf("real node files kept in %s", dir)
		}
	})
	if err := n.start(); err != nil {
		t.Fatalf("real node %s on %s: %v", cfg.Name, cfg.Runtime.Name, err)
	}
	return n
}

func (n *Node) start() error {
	for _, p := range private {
		if err := os.MkdirAll(n.Root(p), 0o755); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(n.Root("/opt/cni/bin"), 0o755); err != nil {
		return err
	}
	if n.cfg.Plugins != "" {
		if out, err := exec.Command("cp", "-a", n.cfg.Plugins+"/.", n.Root("/opt/cni/bin")).CombinedOutput(); err != nil {
			return fmt.Errorf("seed /opt/cni/bin: %v %s", err, out)
		}
	}
	// The holder owns the mount namespace: it makes the namespace, mounts
	// the node's directories in it (never in the machine's) and sleeps.
	var mounts []string
	for _, p := range private {
		mounts = append(mounts, fmt.Sprintf("mount --bind %s %s", n.Root(p), p))
	}
	argv := append(cgexec(), "unshare", "--mount", "--propagation", "private",
		"sh", "-ec", strings.Join(mounts, "; ")+"; exec sleep infinity")
	n.holder = exec.Command(argv[0], argv[1:]...)
	var out strings.Builder
	n.holder.Stdout, n.holder.Stderr = &out, &out
	n.holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cfg.NS.Start(n.holder); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { n.holder.Wait(); close(exited) }()
	comm := fmt.Sprintf("/proc/%d/comm", n.holder.Process.Pid)
	if _, err := wait.For(10*time.Second, "the node's mount namespace", func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		b, _ := os.ReadFile(comm)
		return strings.TrimSpace(string(b)) == "sleep"
	}); err != nil {
		return err
	}
	select {
	case <-exited:
		return fmt.Errorf("mount the node's directories: %s", out.String())
	default:
	}
	if err := n.hostUntouched(); err != nil {
		return err
	}
	if err := n.startRuntime(); err != nil {
		return err
	}
	for _, img := range n.cfg.Images {
		if out, err := n.Ctr("images", "import", img); err != nil {
			return fmt.Errorf("import %s: %v %s", img, err, out)
		}
	}
	if err := n.startKubelet(); err != nil {
		return err
	}
	return n.startProxy()
}

// hostUntouched fails if any of the node's directories is mounted in the
// machine's own mount namespace.
func (n *Node) hostUntouched() error {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, n.Dir) {
			return fmt.Errorf("a node directory is mounted on the machine: %s", line)
		}
	}
	return nil
}

// daemon starts a long-running process of the node: in its cgroup and
// namespaces, logging to <Dir>/<name>.log.
func (n *Node) daemon(name string, args ...string) error {
	log, err := os.Create(filepath.Join(n.Dir, name+".log"))
	if err != nil {
		return err
	}
	argv := append(cgexec(), append([]string{"nsenter", "--target", strconv.Itoa(n.holder.Process.Pid), "--mount", "--net", "--"}, args...)...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	path := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	if n.cfg.Runtime.ShimDir != "" {
		path = n.cfg.Runtime.ShimDir + ":" + path
	}
	cmd.Env = append(os.Environ(), "PATH="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Close()
		return err
	}
	n.procs[name] = cmd
	done := make(chan struct{})
	n.exited[name] = done
	go func() { cmd.Wait(); log.Close(); close(done) }()
	return nil
}

// Log is the tail of a node daemon's log (containerd, kubelet, kube-proxy).
func (n *Node) Log(name string) string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, name+".log"))
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// Ctr runs the runtime's client in the Kubernetes namespace.
func (n *Node) Ctr(args ...string) (string, error) {
	out, err := exec.Command(n.cfg.Runtime.Ctr, append([]string{"--address", n.sock, "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	return string(out), err
}

// stop ends every process of the node (the kubelet first, so it restarts
// nothing) and gives the machine back.
func (n *Node) stop() error {
	if k := n.procs["kubelet"]; k != nil {
		k.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited["kubelet"]:
		case <-time.After(10 * time.Second):
		}
	}
	defer n.lock.Close() // the next real node may start
	if err := releaseHost(); err != nil {
		return err
	}
	return n.hostUntouched()
}
