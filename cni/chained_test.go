package cni

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

// InstallChained against real plugins: the reference portmap and loopback
// of go.mod's release (what Petrel's image carries) and Debian 12's 1.1.1
// build (no version stamps, dynamically linked, reads CNI up to 1.0.0).
func TestInstallChained(t *testing.T) {
	debian := netnstest.RequireTool(t, "/usr/lib/cni/portmap")
	ours := t.TempDir()
	build := exec.Command("go", "build", "-o", ours+"/",
		"github.com/containernetworking/plugins/plugins/meta/portmap",
		"github.com/containernetworking/plugins/plugins/main/loopback")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the reference plugins: %v\n%s", err, out)
	}
	node := func(portmap string) string {
		dir := t.TempDir()
		if portmap != "" {
			b, err := os.ReadFile(portmap)
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, "portmap"), b, 0o755)
		}
		return dir
	}
	same := func(a, b string) bool {
		x, _ := os.ReadFile(a)
		y, _ := os.ReadFile(b)
		return len(x) > 0 && string(x) == string(y)
	}
	script := filepath.Join(t.TempDir(), "portmap")
	os.WriteFile(script, []byte("#!/bin/sh\nexit 1\n"), 0o755)

	for _, c := range []struct {
		name, node, need string
		replaced         bool
		say              string
	}{
		{"none on the node", "", "1.0.0", true, "none on the node"},
		{"Debian's reads 1.0.0", debian, "1.0.0", false, "reads CNI 1.0.0, kept"},
		{"Debian's cannot read 1.1.0", debian, "1.1.0", true, "cannot read CNI 1.1.0, replaced"},
		{"a current one reads 1.1.0", filepath.Join(ours, "portmap"), "1.1.0", false, "kept"},
		{"one it cannot tell about", script, "1.1.0", false, "cannot tell"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := node(c.node)
			said, err := InstallChained(ours, dir, c.need)
			if err != nil {
				t.Fatal(err)
			}
			if got := same(filepath.Join(ours, "portmap"), filepath.Join(dir, "portmap")); got != c.replaced && c.node != filepath.Join(ours, "portmap") {
				t.Fatalf("portmap installed: %v, want %v (%q)", got, c.replaced, said)
			}
			if c.node != "" && !c.replaced && !same(c.node, filepath.Join(dir, "portmap")) {
				t.Fatalf("the node's portmap was changed (%q)", said)
			}
			if !strings.Contains(said[0], c.say) {
				t.Fatalf("said %q, want %q", said[0], c.say)
			}
			if !same(filepath.Join(ours, "loopback"), filepath.Join(dir, "loopback")) {
				t.Fatalf("loopback, missing on the node, was not installed (%q)", said)
			}
		})
	}
}

// In Petrel's image (an empty base) a node's dynamically linked plugin
// cannot run: no loader. Here Debian's portmap is given a loader path that
// does not exist (same length, so the ELF stays valid): it cannot run, as in
// the image, and InstallChained must still tell from the Go it was built
// with that it cannot read 1.1.0, and replace it.
func TestInstallChainedWithoutALoader(t *testing.T) {
	debian := netnstest.RequireTool(t, "/usr/lib/cni/portmap")
	b, err := os.ReadFile(debian)
	if err != nil {
		t.Fatal(err)
	}
	loader, missing := "/lib64/ld-linux-x86-64.so.2", "/nonexistent/ld-petrel.so.2"
	if !strings.Contains(string(b), loader) {
		t.Skipf("%s names another loader", debian)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "portmap"), []byte(strings.Replace(string(b), loader, missing[:len(loader)], 1)), 0o755)
	if err := exec.Command(filepath.Join(dir, "portmap")).Run(); err == nil {
		t.Fatal("the node's portmap still runs")
	}
	if reads, known := readsVersion(filepath.Join(dir, "portmap"), "1.1.0"); reads || !known {
		t.Fatalf("reads 1.1.0: %v, known: %v; want a known no (built with Go 1.19)", reads, known)
	}
	if reads, known := readsVersion(filepath.Join(dir, "portmap"), "1.0.0"); known {
		t.Fatalf("reads 1.0.0: %v, known; want unknown (Go 1.19 builds both kinds)", reads)
	}
}
