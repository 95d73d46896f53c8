// Package rtproto holds the rtm_protocol numbers that mark kernel routes as
// Petrel's. Every Petrel component lists and deletes routes only with these
// numbers, so routes of other daemons (and of the administrator) are never
// touched. The numbers are named in /etc/iproute2/rt_protos.d/petrel.conf
// (see manifests/rt_protos.conf) so that `ip route` prints the names.
package rtproto

const (
	// BGP marks routes the agent learned over BGP and the blackhole routes
	// for the node's own pod CIDRs.
	BGP = 61
	// Pod marks the per-pod /32 and /128 host routes the CNI plugin adds.
	Pod = 62
)
