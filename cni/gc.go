package cni

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/netlinksafe"

	"github.com/petrelnet/petrel/ipam"
)

// GC removes every attachment of this network that the runtime no longer
// lists in cni.dev/valid-attachments: its addresses, and its host veth with
// the routes through it. Host veths are also found by their alias, so a veth
// whose allocation was lost (a plugin killed mid-ADD) is collected too.
func GC(args *skel.CmdArgs) error {
	conf, cerr := ParseConfig(args.StdinData)
	if cerr != nil {
		return cerr
	}
	valid := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		valid[a.ContainerID+"/"+a.IfName] = true
		valid[aliasID(a.ContainerID)+"/"+a.IfName] = true // as a veth alias names a long ID
	}
	keep := func(id, ifName string) bool { return valid[id+"/"+ifName] }

	var errs []error
	if conf.Delegated() {
		if err := invoke.DelegateGC(context.Background(), conf.IPAM.Type, args.StdinData, nil); err != nil {
			errs = append(errs, fmt.Errorf("ipam plugin %s GC: %w", conf.IPAM.Type, err))
		}
	} else {
		released, err := gcStore(conf, keep)
		errs = append(errs, err)
		for _, a := range released {
			errs = append(errs, removeHostVeth(HostVethName(a.ContainerID, a.IfName)))
		}
	}
	errs = append(errs, gcVeths(conf.Name, keep))
	if err := errors.Join(errs...); err != nil {
		return asCNIError(types.ErrInternal, "gc", err)
	}
	return nil
}

func gcStore(conf *Config, keep func(id, ifName string) bool) ([]ipam.Allocation, error) {
	s, err := ipam.Open(conf.IPAM.DataDir, conf.LockTimeout)
	if err != nil {
		return nil, ipamError("open ipam store", err)
	}
	defer s.Close()
	released, err := s.GC(conf.Name, keep)
	if err != nil {
		return nil, ipamError("gc", err)
	}
	return released, nil
}

// gcVeths deletes host veths of this network whose attachment is not kept.
// Only links that carry both Petrel's name prefix and Petrel's alias for
// this network are considered.
func gcVeths(network string, keep func(id, ifName string) bool) error {
	links, err := netlinksafe.LinkList()
	if err != nil {
		return fmt.Errorf("list links: %w", err)
	}
	var errs []error
	for _, l := range links {
		attrs := l.Attrs()
		if l.Type() != "veth" || !strings.HasPrefix(attrs.Name, HostVethPrefix) {
			continue
		}
		owner, id, ifName, ok := parseAlias(attrs.Alias)
		// A hashed ID cannot give the veth's name back; the prefix and the
		// alias must do.
		named := strings.HasPrefix(id, hashedID) || attrs.Name == HostVethName(id, ifName)
		if !ok || owner != network || keep(id, ifName) || !named {
			continue
		}
		errs = append(errs, removeHostVeth(attrs.Name))
	}
	return errors.Join(errs...)
}
