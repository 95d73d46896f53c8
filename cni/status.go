package cni

import (
	"context"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/petrelnet/petrel/ipam"
)

// Status reports whether an ADD could succeed now: the store opens and at
// least one address of every configured family is free.
func Status(args *skel.CmdArgs) error {
	conf, cerr := ParseConfig(args.StdinData)
	if cerr != nil {
		return cerr
	}
	if conf.Delegated() {
		if err := invoke.DelegateStatus(context.Background(), conf.IPAM.Type, args.StdinData, nil); err != nil {
			return asCNIError(types.ErrPluginNotAvailable, "ipam plugin "+conf.IPAM.Type, err)
		}
		return nil
	}
	s, err := ipam.Open(conf.IPAM.DataDir, conf.LockTimeout)
	if err != nil {
		return errf(types.ErrPluginNotAvailable, "ipam store unusable: %v", err)
	}
	defer s.Close()
	all, err := s.List("")
	if err != nil {
		return errf(types.ErrPluginNotAvailable, "ipam store %s unreadable: %v", s.Path(), err)
	}
	for _, fam := range familyFree(conf.Ranges, all) {
		if !fam.free {
			return errf(types.ErrPluginNotAvailable, "no free %s address in %v", fam.name, fam.ranges)
		}
	}
	return nil
}

type familyUsage struct {
	name   string
	ranges []ipam.Range
	free   bool // some address is left
}

func familyFree(ranges []ipam.Range, all []ipam.Allocation) []familyUsage {
	var out []familyUsage
	for _, name := range []string{"IPv4", "IPv6"} {
		u := familyUsage{name: name}
		for _, r := range ranges {
			if r.Is4() != (name == "IPv4") {
				continue
			}
			used := 0
			for _, a := range all {
				if r.Contains(a.IP) {
					used++
				}
			}
			u.ranges = append(u.ranges, r)
			u.free = u.free || used < r.Size()
		}
		if len(u.ranges) > 0 {
			out = append(out, u)
		}
	}
	return out
}
