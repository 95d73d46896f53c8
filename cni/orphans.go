package cni

import (
	"fmt"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/petrelnet/petrel/ipam"
)

// OrphanMinAge is how old an attachment must be before ReleaseOrphans may
// take it for lost: ADD allocates the address before it creates the veth,
// and finishes or rolls back within seconds.
const OrphanMinAge = 2 * time.Minute

// ReleaseOrphans releases the addresses of network's attachments whose
// host veth is gone and which are older than minAge. A pod's veth pair
// goes with its network namespace, and its routes with the veth; only the
// address in the store is left when Petrel's DEL never ran: libcni runs a
// chain's DEL last plugin first and stops at the first failure (an old
// portmap refusing the config's version), and a runtime may give up on a
// sandbox and delete its namespace anyway. Runtimes without CNI GC
// (containerd 1.6 and 1.7) never tell the plugin. It returns what it
// released; a live attachment (its veth present) is never touched.
func ReleaseOrphans(dataDir, network string, minAge time.Duration, now time.Time) ([]ipam.Allocation, error) {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	present := map[string]bool{}
	for _, l := range links {
		if name := l.Attrs().Name; strings.HasPrefix(name, HostVethPrefix) {
			present[name] = true
		}
	}
	s, err := ipam.Open(dataDir, DefaultLockTimeout)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	return s.GCAllocations(network, func(o ipam.Owner, as []ipam.Allocation) bool {
		if present[HostVethName(o.ContainerID, o.IfName)] {
			return true
		}
		for _, a := range as {
			if now.Sub(a.Time) < minAge {
				return true // an ADD may still be creating the veth
			}
		}
		return false
	})
}
