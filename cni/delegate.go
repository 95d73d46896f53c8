package cni

import (
	"context"
	"fmt"
	"net/netip"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
)

// Another IPAM plugin (host-local, whereabouts, …) is run the standard way:
// found on CNI_PATH, given the same stdin, with CNI_COMMAND set per call.
// Whatever prefix length it returns, the pod gets a /32 or /128.

func delegateAdd(conf *Config, args *skel.CmdArgs) ([]netip.Addr, types.DNS, error) {
	res, err := invoke.DelegateAdd(context.Background(), conf.IPAM.Type, args.StdinData, nil)
	if err != nil {
		return nil, types.DNS{}, asCNIError(types.ErrInternal, "ipam plugin "+conf.IPAM.Type, err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, types.DNS{}, rollbackDelegate(conf, args, fmt.Errorf("decode result of ipam plugin %s: %w", conf.IPAM.Type, err))
	}
	var addrs []netip.Addr
	for _, ipc := range r.IPs {
		a, ok := netip.AddrFromSlice(ipc.Address.IP)
		if !ok {
			return nil, types.DNS{}, rollbackDelegate(conf, args, fmt.Errorf("ipam plugin %s returned address %v", conf.IPAM.Type, ipc.Address.IP))
		}
		addrs = append(addrs, a.Unmap())
	}
	if len(addrs) == 0 {
		return nil, types.DNS{}, rollbackDelegate(conf, args, fmt.Errorf("ipam plugin %s returned no address", conf.IPAM.Type))
	}
	return addrs, r.DNS, nil
}

func rollbackDelegate(conf *Config, args *skel.CmdArgs, cause error) error {
	_ = delegateDel(conf, args)
	return errf(types.ErrInternal, "%v", cause)
}

func delegateDel(conf *Config, args *skel.CmdArgs) error {
	if err := invoke.DelegateDel(context.Background(), conf.IPAM.Type, args.StdinData, nil); err != nil {
		return asCNIError(types.ErrInternal, "ipam plugin "+conf.IPAM.Type+" DEL", err)
	}
	return nil
}
