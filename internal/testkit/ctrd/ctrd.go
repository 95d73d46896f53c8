// Package ctrd runs a real containerd for tests: Debian's (1.6, apt) from
// PATH, with a root, state and socket of the test's own, stopped by PID at
// the end. Images come from archives (`ctr images import`): no registry is
// reachable here.
package ctrd

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// Namespace is the containerd namespace the kubelet's CRI uses.
const Namespace = "k8s.io"

// Containerd is one running containerd.
type Containerd struct {
	t      testing.TB
	Socket string
	dir    string
}

// Start starts containerd with everything under a new directory; extra is
// appended to its config (TOML, version 2).
func Start(t testing.TB, extra string) *Containerd {
	t.Helper()
	netnstest.RequireRoot(t)
	bin := netnstest.RequireTool(t, "containerd")
	netnstest.RequireTool(t, "ctr")
	// Short: the socket path must fit in a sockaddr_un.
	dir, err := os.MkdirTemp("", "ctrd")
	if err != nil {
		t.Fatal(err)
	}
	c := &Containerd{t: t, Socket: filepath.Join(dir, "containerd.sock"), dir: dir}
	// No CRI plugin: nothing here needs it, and it makes and watches the
	// machine's /etc/cni/net.d (a real node's test found the directory
	// there or not depending on which test ran first).
	conf := fmt.Sprintf("version = 2\nroot = %q\nstate = %q\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n%s\n",
		filepath.Join(dir, "root"), filepath.Join(dir, "state"), c.Socket, c.Socket+".ttrpc", extra)
	if err := os.WriteFile(filepath.Join(dir, "config.toml"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config", filepath.Join(dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		log.Close()
		c.unmountAll()
		os.RemoveAll(dir)
	})
	if _, err := wait.For(10*time.Second, "containerd to answer", func() bool {
		_, err := c.Ctr("version")
		return err == nil
	}); err != nil {
		b, _ := os.ReadFile(log.Name())
		t.Fatalf("containerd did not start: %v\n%s", err, b)
	}
	return c
}

// Ctr runs ctr against this containerd in the Kubernetes namespace.
func (c *Containerd) Ctr(args ...string) (string, error) {
	out, err := exec.Command("ctr", append([]string{"--address", c.Socket, "--namespace", Namespace}, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Import imports an image archive.
func (c *Containerd) Import(archive string) {
	c.t.Helper()
	if _, err := c.Ctr("images", "import", archive); err != nil {
		c.t.Fatal(err)
	}
}

// unmountAll unmounts what containerd left mounted under its directory
// (snapshots of a killed run), deepest first.
func (c *Containerd) unmountAll() {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	var under []string
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], c.dir+"/") {
			under = append(under, f[1])
		}
	}
	for i := len(under) - 1; i >= 0; i-- {
		syscall.Unmount(under[i], syscall.MNT_DETACH)
	}
}
