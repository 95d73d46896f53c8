package cni

import (
	"errors"
	"net/netip"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/petrelnet/petrel/ipam"
)

// Add wires one pod interface. Whatever fails, nothing is left behind: the
// host veth (and with it the peer and the routes) is removed and the
// addresses are released before the error is returned.
func Add(args *skel.CmdArgs) error {
	conf, cerr := ParseConfig(args.StdinData)
	if cerr != nil {
		return cerr
	}
	podNS, err := ns.GetNS(args.Netns)
	if err != nil {
		return errf(types.ErrUnknownContainer, "pod network namespace %s: %v", args.Netns, err)
	}
	defer podNS.Close()

	owner := ownerOf(conf, args)
	addrs, dns, err := allocate(conf, args, owner)
	if err != nil {
		return err
	}
	a := &attachment{
		network: conf.Name, containerID: args.ContainerID, ifName: args.IfName,
		netnsFd: int(podNS.Fd()), mtu: conf.MTU, addrs: addrs,
	}
	w, err := setup(a)
	if err != nil {
		return rollback(conf, args, owner, a, asCNIError(types.ErrInternal, "wire pod", err))
	}
	if conf.DNS.IsEmpty() {
		conf.DNS = dns
	}
	return types.PrintResult(buildResult(conf, args, w, addrs), conf.CNIVersion)
}

// rollback undoes a failed ADD and returns cause, joined with anything the
// undo itself could not do.
func rollback(conf *Config, args *skel.CmdArgs, o ipam.Owner, a *attachment, cause *types.Error) error {
	errs := []error{removeHostVeth(a.hostName()), release(conf, args, o)}
	if err := errors.Join(errs...); err != nil {
		cause.Details = strings.TrimSpace(cause.Details + " (cleanup failed: " + err.Error() + ")")
	}
	return cause
}

// allocate returns one address per configured family, from the in-process
// store or from the delegated IPAM plugin.
func allocate(conf *Config, args *skel.CmdArgs, o ipam.Owner) ([]netip.Addr, types.DNS, error) {
	if conf.Delegated() {
		return delegateAdd(conf, args)
	}
	s, err := ipam.Open(conf.IPAM.DataDir, conf.LockTimeout)
	if err != nil {
		return nil, types.DNS{}, ipamError("open ipam store", err)
	}
	defer s.Close()
	as, err := s.Allocate(conf.Ranges, o, time.Now())
	if err != nil {
		return nil, types.DNS{}, ipamError("allocate", err)
	}
	out := make([]netip.Addr, len(as))
	for i, al := range as {
		out[i] = al.IP
	}
	return out, types.DNS{}, nil
}

// release frees what allocate handed out; nothing held is success.
func release(conf *Config, args *skel.CmdArgs, o ipam.Owner) error {
	if conf.Delegated() {
		return delegateDel(conf, args)
	}
	s, err := ipam.Open(conf.IPAM.DataDir, conf.LockTimeout)
	if err != nil {
		return ipamError("open ipam store", err)
	}
	defer s.Close()
	if _, err := s.Release(o); err != nil {
		return ipamError("release", err)
	}
	return nil
}

func ownerOf(conf *Config, args *skel.CmdArgs) ipam.Owner {
	o := ipam.Owner{Network: conf.Name, ContainerID: args.ContainerID, IfName: args.IfName}
	for kv := range strings.SplitSeq(args.Args, ";") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "K8S_POD_NAMESPACE":
			o.PodNamespace = v
		case "K8S_POD_NAME":
			o.PodName = v
		}
	}
	return o
}

func buildResult(conf *Config, args *skel.CmdArgs, w wired, addrs []netip.Addr) *current.Result {
	r := &current.Result{
		CNIVersion: current.ImplementedSpecVersion,
		Interfaces: []*current.Interface{
			{Name: w.hostName, Mac: w.hostMAC.String()},
			{Name: args.IfName, Mac: w.podMAC.String(), Sandbox: args.Netns},
		},
		DNS: conf.DNS,
	}
	for _, ip := range addrs {
		gw := GatewayV6
		if ip.Is4() {
			gw = GatewayV4
		}
		r.IPs = append(r.IPs, &current.IPConfig{Interface: current.Int(1), Address: *hostNet(ip), Gateway: gw.AsSlice()})
	}
	for _, gw := range gatewaysFor(addrs) {
		r.Routes = append(r.Routes, &types.Route{Dst: *defaultNet(gw), GW: gw.AsSlice()})
	}
	return r
}
