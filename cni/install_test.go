package cni

import (
	"os"
	"path/filepath"
	"testing"
)

func TestInstallBinaryReplacesAtomically(t *testing.T) {
	src, dir := filepath.Join(t.TempDir(), "petrel"), t.TempDir()
	os.WriteFile(src, []byte("new plugin"), 0o644)
	os.WriteFile(filepath.Join(dir, PluginType), []byte("old"), 0o755)
	if err := InstallBinary(src, dir); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, PluginType))
	st, _ := os.Stat(filepath.Join(dir, PluginType))
	if string(b) != "new plugin" || st.Mode().Perm() != 0o755 {
		t.Fatalf("installed %q mode %v", b, st.Mode())
	}
	if es, _ := os.ReadDir(dir); len(es) != 1 {
		t.Fatalf("left behind: %v", es)
	}
	if err := InstallBinary(filepath.Join(dir, "missing"), dir); err == nil {
		t.Fatal("a missing source was installed")
	}
	if es, _ := os.ReadDir(dir); len(es) != 1 {
		t.Fatalf("a failed install left %v", es)
	}
}
