package cni

import (
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/version"
)

// ChainedPlugins are the reference plugins Petrel's image carries for the
// node: portmap, which the conflist chains for hostPort, and loopback,
// which containerd 1.6 and 1.7 call for every pod's lo.
var ChainedPlugins = []string{"portmap", "loopback"}

// What each CNI spec version first needs: the reference plugins release
// and the CNI library (libcni) that read it.
var specNeeds = map[string]struct{ plugins, libcni, golang string }{
	"1.1.0": {plugins: "1.5.0", libcni: "1.2.0", golang: "1.21"},
	"1.0.0": {plugins: "1.0.0", libcni: "1.0.0", golang: "1.14"},
}

// InstallChained installs the plugins of ChainedPlugins found in srcDir
// into dstDir where the node has none, or has one that provably cannot read
// a list of CNI version need while Petrel's can. It never replaces a
// plugin that reads need, nor one it cannot tell about (a dynamically
// linked build it cannot run, without version stamps): those it reports,
// so that the operator knows to keep the conflist at a version they read.
// It returns one line per plugin saying what it did.
func InstallChained(srcDir, dstDir, need string) ([]string, error) {
	var said []string
	var errs []error
	for _, name := range ChainedPlugins {
		src, dst := filepath.Join(srcDir, name), filepath.Join(dstDir, name)
		if _, err := os.Stat(src); err != nil {
			continue // not in this image
		}
		reads, known := readsVersion(dst, need)
		_, missing := os.Stat(dst)
		switch {
		case errors.Is(missing, fs.ErrNotExist):
			said = append(said, fmt.Sprintf("%s: none on the node, installed Petrel's", name))
		case known && reads:
			said = append(said, fmt.Sprintf("%s: the node's %[1]s reads CNI %s, kept", name, need))
			continue
		case !known:
			said = append(said, fmt.Sprintf("%s: cannot tell whether the node's %[1]s reads CNI %s, kept; if pods fail with an unsupported version, set cniVersion to one it reads", name, need))
			continue
		default:
			if ours, ok := readsVersion(src, need); !ok || !ours {
				said = append(said, fmt.Sprintf("%s: the node's %[1]s does not read CNI %s and neither does Petrel's, kept", name, need))
				continue
			}
			said = append(said, fmt.Sprintf("%s: the node's %[1]s cannot read CNI %s, replaced with Petrel's", name, need))
		}
		errs = append(errs, installFile(src, dst))
	}
	return said, errors.Join(errs...)
}

// readsVersion tells whether the plugin at path reads CNI version need,
// and whether it could tell: from the versions stamped in the binary (the
// CNI library it was built with, or the plugins release), by asking it
// (VERSION, which a static binary answers here), or, against it, from the
// Go it was built with (too old for the library that reads need).
func readsVersion(path, need string) (reads, known bool) {
	req, ok := specNeeds[need]
	if !ok {
		return false, false
	}
	info, err := buildinfo.ReadFile(path)
	if err != nil {
		return false, false // missing, or not a Go binary
	}
	for _, m := range append([]*debug.Module{&info.Main}, info.Deps...) {
		switch m.Path {
		case "github.com/containernetworking/cni":
			if v, ok := releaseVersion(m.Version); ok {
				return atLeast(v, req.libcni), true
			}
		case "github.com/containernetworking/plugins":
			if v, ok := releaseVersion(m.Version); ok {
				return atLeast(v, req.plugins), true
			}
		}
	}
	if pi, err := invoke.GetVersionInfo(context.Background(), path, nil); err == nil {
		return slices.Contains(pi.SupportedVersions(), need), true
	}
	if v, ok := strings.CutPrefix(info.GoVersion, "go"); ok && !atLeast(v, req.golang) {
		return false, true
	}
	return false, false
}

// releaseVersion turns "v1.5.1" into "1.5.1"; "(devel)" and pseudo-versions are
// not releases.
func releaseVersion(v string) (string, bool) {
	v, ok := strings.CutPrefix(v, "v")
	if !ok || strings.ContainsAny(v, "-+") {
		return "", false
	}
	return v, true
}

func atLeast(v, min string) bool {
	ok, err := version.GreaterThanOrEqualTo(v, min)
	return err == nil && ok
}
