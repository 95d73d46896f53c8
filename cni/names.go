package cni

import (
	"crypto/sha256"
	"encoding/hex"
	"net"
	"strings"
)

// HostVethPrefix starts the name of every host-side veth Petrel creates.
const HostVethPrefix = "petr"

// HostVethName is the host end's name for an attachment: stable for the
// same container ID and interface, 15 characters (the kernel's limit).
func HostVethName(containerID, ifName string) string {
	sum := sha256.Sum256([]byte(containerID + "/" + ifName))
	return HostVethPrefix + hex.EncodeToString(sum[:])[:15-len(HostVethPrefix)]
}

// hostVethMAC is a locally administered unicast MAC derived from the same
// hash. Knowing it before the link exists lets ADD program the pod's
// gateway neighbour entry without reading the link back.
func hostVethMAC(containerID, ifName string) net.HardwareAddr {
	sum := sha256.Sum256([]byte("mac/" + containerID + "/" + ifName))
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&0xfc | 0x02
	return mac
}

// aliasPrefix marks the host veth's alias so that GC can tell which
// attachment and network a veth belongs to even when the store has lost it.
const aliasPrefix = "petrel:"

// maxAlias is the longest interface alias the kernel takes (IFALIASZ less
// the terminating NUL).
const maxAlias = 255

// hashedID stands for a container ID too long for the alias (the CNI spec
// puts no limit on its length): "sha256-" and the ID's hash.
const hashedID = "sha256-"

func vethAlias(network, containerID, ifName string) string {
	a := aliasPrefix + network + ":" + ifName + ":" + containerID
	if len(a) <= maxAlias {
		return a
	}
	return aliasPrefix + network + ":" + ifName + ":" + aliasID(containerID)
}

// aliasID is how an alias names a container: the ID itself when it is
// short enough for any alias, its hash otherwise.
func aliasID(containerID string) string {
	if len(containerID) <= 128 {
		return containerID
	}
	sum := sha256.Sum256([]byte(containerID))
	return hashedID + hex.EncodeToString(sum[:])
}

// parseAlias is the inverse of vethAlias.
func parseAlias(alias string) (network, containerID, ifName string, ok bool) {
	rest, ok := strings.CutPrefix(alias, aliasPrefix)
	if !ok {
		return "", "", "", false
	}
	parts := strings.SplitN(rest, ":", 3)
	if len(parts) != 3 {
		return "", "", "", false
	}
	return parts[0], parts[2], parts[1], true
}
