// Package atomicfile writes files so that a reader sees the old content or
// the new, never a half-written file: a container runtime watching the CNI
// config directory, a kubelet exec'ing the plugin, a lab reading its state.
package atomicfile

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// Write copies r into path with mode perm: a temporary file in the same
// directory (a dot-name without path's extension, which a directory
// scanner for *.conflist or *.yml skips), synced, then renamed over path.
func Write(path string, r io.Reader, perm os.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	_, err = io.Copy(tmp, r)
	if err == nil {
		err = tmp.Chmod(perm)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
