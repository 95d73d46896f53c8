package cni

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/petrelnet/petrel/internal/atomicfile"
)

// InstallBinary copies the plugin at src into dir as "petrel", atomically:
// a temporary file in dir renamed over the old one, so the kubelet never
// runs a half-written binary, even while pods are being added.
func InstallBinary(src, dir string) error {
	return installFile(src, filepath.Join(dir, PluginType))
}

func installFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install CNI plugin: %w", err)
	}
	defer in.Close()
	if err := atomicfile.Write(dst, in, 0o755); err != nil {
		return fmt.Errorf("install CNI plugin: %w", err)
	}
	return nil
}
