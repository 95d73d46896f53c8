package cni

import (
	"errors"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// Del removes an attachment. It needs neither the pod namespace nor any
// earlier state: the host veth is found by its derived name (deleting it
// deletes the pod end and every route through it) and the addresses by
// owner. Anything already gone counts as removed, so DEL can run any number
// of times. The veth goes first so that an address is never free while a
// route to it still exists.
func Del(args *skel.CmdArgs) error {
	conf, cerr := ParseConfig(args.StdinData)
	if cerr != nil {
		return cerr
	}
	err := errors.Join(
		removeHostVeth(HostVethName(args.ContainerID, args.IfName)),
		release(conf, args, ownerOf(conf, args)),
	)
	if err != nil {
		return asCNIError(types.ErrInternal, "delete attachment", err)
	}
	return nil
}
