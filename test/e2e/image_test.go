package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/ctrd"
	"github.com/petrelnet/petrel/internal/testkit/kubetest"
	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/version"
)

// TestImageOnContainerd16 takes the image `make image` writes (without a
// Docker engine) to a real containerd, Debian's 1.6: it imports under the
// exact name the manifest uses, its agent prints this tree's version, and
// its init container, run with the manifest's own arguments against a
// node directory holding Debian's portmap 1.1.1, installs Petrel's plugin
// and loopback, keeps that portmap for the default CNI 1.0.0 list and
// replaces it for a 1.1.0 one (it cannot run it there: the image has no
// loader for a dynamically linked binary, so it goes by the Go it was built
// with).
func TestImageOnContainerd16(t *testing.T) {
	netnstest.RequireRoot(t)
	archive := filepath.Join(kubetest.RepoRoot(), "bin", "petrel-image.tar")
	if _, err := os.Stat(archive); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v: `make image` writes it (make test does)", err)
		}
		t.Skipf("%v: run `make image` first (make test does)", err)
	}
	debian, err := os.ReadFile("/usr/lib/cni/portmap")
	if err != nil {
		t.Fatalf("Debian's reference plugins (test/setup.sh installs them): %v", err)
	}
	c := ctrd.Start(t, "")
	c.Import(archive)
	names, err := c.Ctr("images", "ls", "-q")
	if err != nil {
		t.Fatal(err)
	}
	ds, err := kubetest.DaemonSet()
	if err != nil {
		t.Fatal(err)
	}
	initC := ds.Spec.Template.Spec.InitContainers[0]
	if !strings.Contains(names, initC.Image+"\n") {
		t.Fatalf("containerd has %q, the manifest runs %s", names, initC.Image)
	}
	if out, err := c.Ctr("run", "--rm", initC.Image, "petrel-version", "/usr/local/bin/petrel-agent", "--version"); err != nil || strings.TrimSpace(out) != "petrel-agent "+version.Version {
		t.Fatalf("--version: %q %v", out, err)
	}

	for _, cs := range []struct {
		cniVersion string
		replaced   bool
	}{{"1.0.0", false}, {"1.1.0", true}} {
		host, conf := t.TempDir(), t.TempDir()
		os.WriteFile(filepath.Join(host, "portmap"), debian, 0o755)
		os.WriteFile(filepath.Join(conf, "config.yaml"), []byte("clusterCIDRs: [10.244.0.0/16]\ncniVersion: \""+cs.cniVersion+"\"\n"), 0o644)
		args := []string{"run", "--rm",
			"--mount", "type=bind,src=" + host + ",dst=/host/opt/cni/bin,options=rbind:rw",
			"--mount", "type=bind,src=" + conf + ",dst=/etc/petrel,options=rbind:ro",
			initC.Image, "install-cni-" + strings.ReplaceAll(cs.cniVersion, ".", ""), "/usr/local/bin/petrel-agent"}
		out, err := c.Ctr(append(args, initC.Args...)...)
		if err != nil {
			t.Fatalf("init container, cniVersion %s: %v", cs.cniVersion, err)
		}
		t.Logf("init container, cniVersion %s:\n%s", cs.cniVersion, strings.TrimSpace(out))
		for _, name := range []string{"petrel", "loopback", "portmap"} {
			if st, err := os.Stat(filepath.Join(host, name)); err != nil || st.Mode().Perm() != 0o755 {
				t.Fatalf("cniVersion %s: %s on the node: %v", cs.cniVersion, name, err)
			}
		}
		now, _ := os.ReadFile(filepath.Join(host, "portmap"))
		if replaced := string(now) != string(debian); replaced != cs.replaced {
			t.Fatalf("cniVersion %s: Debian's portmap replaced: %v, want %v", cs.cniVersion, replaced, cs.replaced)
		}
	}
}
