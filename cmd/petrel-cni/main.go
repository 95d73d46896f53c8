// Command petrel-cni is Petrel's CNI plugin, installed as /opt/cni/bin/petrel.
// The container runtime runs it once per pod and command (CNI spec 1.1).
package main

import (
	"runtime"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/petrelnet/petrel/cni"
)

// The plugin opens netlink handles in the pod's namespace; pinning main to
// one OS thread keeps every step on a thread whose namespace is the host's.
func init() { runtime.LockOSThread() }

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:    cni.Add,
		Del:    cni.Del,
		Check:  cni.Check,
		GC:     cni.GC,
		Status: cni.Status,
	}, version.PluginSupports("0.4.0", "1.0.0", "1.1.0"), "petrel: point-to-point pod networking with built-in IPAM")
}
