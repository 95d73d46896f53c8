package cni

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// InstallBinary copies the plugin at src into dir as "petrel", atomically:
// a temporary file in dir renamed over the old one, so the kubelet never
// runs a half-written binary, even while pods are being added.
func InstallBinary(src, dir string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install CNI plugin: %w", err)
	}
	defer in.Close()
	tmp, err := os.CreateTemp(dir, ".petrel-*")
	if err != nil {
		return fmt.Errorf("install CNI plugin: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename
	_, err = io.Copy(tmp, in)
	if err == nil {
		err = tmp.Chmod(0o755)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), filepath.Join(dir, PluginType))
	}
	if err != nil {
		return fmt.Errorf("install CNI plugin into %s: %w", dir, err)
	}
	return nil
}
