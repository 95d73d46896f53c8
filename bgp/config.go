// Package bgp embeds a GoBGP v4 speaker: it announces this node's pod CIDRs,
// accepts only cluster prefixes, and reports the best paths for the kernel.
// It is the only package that imports GoBGP.
package bgp

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"time"
)

// Config is the speaker's global configuration; fixed for its lifetime.
type Config struct {
	ASN      uint32
	RouterID netip.Addr
	// ListenPort is the BGP port; -1 does not listen (outgoing only).
	ListenPort int32
	// ListenAddresses limits where it listens; empty means all.
	ListenAddresses []netip.Addr
	// GRPCAddress serves the stock gobgp CLI: a loopback host:port or
	// unix:///path. Empty disables it.
	GRPCAddress string
	// PodCIDRs are this node's own: the only prefixes exported, and never
	// accepted from a peer.
	PodCIDRs []netip.Prefix
	// ClusterCIDRs (and ImportExtras) bound what is accepted from peers.
	ClusterCIDRs []netip.Prefix
	ImportExtras []netip.Prefix
	// RouteReflector makes this node reflect the cluster's routes to its
	// route-reflector clients (RFC 4456), so its export carries every
	// accepted cluster prefix, not only its own.
	RouteReflector bool
	// ClusterID is the route reflector's cluster ID; zero: the router ID.
	ClusterID netip.Addr
	// PrefixLimitWait is the first wait before a peer shut down for
	// exceeding its prefix limit is tried again (doubling each time, up to
	// 30 minutes); zero: one minute.
	PrefixLimitWait time.Duration
}

// Validate names the first bad field.
func (c Config) Validate() error {
	var errs []error
	if c.ASN == 0 {
		errs = append(errs, errors.New("asn: required"))
	}
	if c.ASN == asTrans {
		errs = append(errs, errors.New("asn: 23456 is AS_TRANS (RFC 6793), a placeholder, not an AS"))
	}
	if !c.RouterID.Is4() {
		errs = append(errs, fmt.Errorf("routerID: %v is not an IPv4 address", c.RouterID))
	}
	if c.ListenPort < -1 || c.ListenPort > 65535 || c.ListenPort == 0 {
		errs = append(errs, fmt.Errorf("listenPort: %d out of range (1-65535, or -1 for none)", c.ListenPort))
	}
	if err := ValidateGRPCAddress(c.GRPCAddress); err != nil {
		errs = append(errs, fmt.Errorf("grpcAddress: %w", err))
	}
	for i, p := range c.PodCIDRs {
		if !inAny(p, c.ClusterCIDRs) {
			errs = append(errs, fmt.Errorf("podCIDRs[%d]: %s is not inside any of clusterCIDRs", i, p))
		}
	}
	if c.ClusterID.IsValid() && !c.ClusterID.Is4() {
		errs = append(errs, fmt.Errorf("clusterID: %v is not an IPv4 address", c.ClusterID))
	}
	if len(c.ClusterCIDRs) == 0 {
		errs = append(errs, errors.New("clusterCIDRs: at least one is required (the import guard accepts only these)"))
	}
	return errors.Join(errs...)
}

// ValidateGRPCAddress accepts only addresses no other host can reach.
func ValidateGRPCAddress(s string) error {
	if s == "" {
		return nil
	}
	if path, ok := strings.CutPrefix(s, "unix://"); ok {
		if !strings.HasPrefix(path, "/") {
			return fmt.Errorf("%q: unix socket path must be absolute", s)
		}
		return nil
	}
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return fmt.Errorf("%q: want 127.0.0.1:PORT, [::1]:PORT or unix:///path", s)
	}
	if !ap.Addr().IsLoopback() {
		return fmt.Errorf("%q: the API must listen on a loopback address, never a routable one", s)
	}
	return nil
}

func inAny(p netip.Prefix, set []netip.Prefix) bool {
	for _, s := range set {
		if s.Bits() <= p.Bits() && s.Contains(p.Addr()) {
			return true
		}
	}
	return false
}

// Peer is one BGP neighbor. Set replaces a peer whose settings differ from
// the running one.
type Peer struct {
	Address      netip.Addr
	ASN          uint32
	LocalAddress netip.Addr // zero: chosen by the kernel
	Port         uint16     // zero: 179
	Password     string     // TCP MD5
	Multihop     uint8      // eBGP multihop TTL; zero: directly connected
	ConnectRetry time.Duration
	HoldTime     time.Duration
	Keepalive    time.Duration
	GracefulRestart
	BFD
	RouteReflectorClient bool
	MaxPrefixes          uint32 // zero: DefaultMaxPrefixes
	// Accept, when not empty, narrows the import guard for this peer to
	// these prefixes (and their subnets): a node in the mesh may announce
	// only its own pod CIDRs, never another node's.
	Accept []netip.Prefix
	// AcceptExact narrows it too, to exactly these prefixes, no
	// more-specifics: a top-of-rack router may pass on each node's pod
	// CIDR as the API gives it, never a /32 carved out of one.
	AcceptExact []netip.Prefix
	// Guarded applies Accept and AcceptExact even when both are empty: a
	// router outside the cluster of a one-node cluster may send nothing.
	Guarded bool
	// AcceptServices widens Accept by the Service scope of Set's Adverts:
	// another node of the cluster may announce Service addresses too.
	AcceptServices bool
	// Withhold keeps kinds of announcements from this peer; changed live.
	Withhold Withhold
}

// Withhold names the kinds of announcements a peer does not get.
type Withhold struct {
	PodCIDRs bool // this node's pod CIDRs (and the cluster's, reflected)
	Services bool // Service addresses, this node's and reflected ones
}

// sameSession reports whether p and q configure the same session: all but
// the accepted prefixes, which the guard changes live, without resetting
// the session (a node joining the cluster widens every router's list).
func (p Peer) sameSession(q Peer) bool {
	p.Accept, p.AcceptExact, q.Accept, q.AcceptExact = nil, nil, nil, nil
	p.AcceptServices, q.AcceptServices, p.Guarded, q.Guarded = false, false, false, false
	p.Withhold, q.Withhold = Withhold{}, Withhold{}
	return reflect.DeepEqual(p, q)
}

// sameGuard reports whether p and q accept the same prefixes.
func (p Peer) sameGuard(q Peer) bool {
	return slices.Equal(p.Accept, q.Accept) && slices.Equal(p.AcceptExact, q.AcceptExact) && p.AcceptServices == q.AcceptServices && p.Withhold == q.Withhold && p.Guarded == q.Guarded
}

// GracefulRestart configures RFC 4724 for a peer.
type GracefulRestart struct {
	Enabled     bool
	RestartTime time.Duration
	HelperOnly  bool
}

// BFD configures fast failure detection for a peer.
type BFD struct {
	Enabled    bool
	MinTx      time.Duration
	MinRx      time.Duration
	Multiplier uint8
}

// asTrans is AS_TRANS (RFC 6793): it stands in for a 4-byte AS in 2-byte
// speakers' messages and is never a real AS.
const asTrans = 23456

// defaultHoldTime is GoBGP's hold time when a peer sets none.
const defaultHoldTime = 90 * time.Second

// Validate names the first bad field, prefixed with the peer's address.
func (p Peer) Validate() error {
	var errs []error
	if !p.Address.IsValid() {
		errs = append(errs, errors.New("address: required"))
	}
	if p.ASN == 0 {
		errs = append(errs, errors.New("asn: required"))
	}
	if p.ASN == asTrans {
		errs = append(errs, errors.New("asn: 23456 is AS_TRANS (RFC 6793), a placeholder, not an AS"))
	}
	if p.LocalAddress.IsValid() && p.LocalAddress.Is4() != p.Address.Is4() {
		errs = append(errs, fmt.Errorf("localAddress: %s is of the other family", p.LocalAddress))
	}
	if p.HoldTime != 0 && (p.HoldTime < 3*time.Second || p.HoldTime > 65535*time.Second) {
		errs = append(errs, fmt.Errorf("holdTime: %s, want 0 (default) or 3s-65535s", p.HoldTime))
	}
	if hold := cmp.Or(p.HoldTime, defaultHoldTime); p.Keepalive*3 > hold {
		errs = append(errs, fmt.Errorf("keepaliveTime: %s is more than a third of holdTime %s", p.Keepalive, hold))
	}
	if b := p.BFD; b.Enabled {
		for name, d := range map[string]time.Duration{"bfd.minTx": b.MinTx, "bfd.minRx": b.MinRx} {
			if d != 0 && (d < 10*time.Millisecond || d > 10*time.Second) {
				errs = append(errs, fmt.Errorf("%s: %s, want 10ms-10s", name, d))
			}
		}
	}
	for name, d := range map[string]time.Duration{"connectRetry": p.ConnectRetry, "holdTime": p.HoldTime, "keepaliveTime": p.Keepalive, "gracefulRestart.restartTime": p.RestartTime} {
		if d%time.Second != 0 || d < 0 {
			errs = append(errs, fmt.Errorf("%s: %s is not a whole number of seconds (BGP timers are)", name, d))
		}
	}
	if p.RestartTime > 4095*time.Second {
		errs = append(errs, fmt.Errorf("gracefulRestart.restartTime: %s exceeds 4095s", p.RestartTime))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("peer %s: %w", p.Address, err)
	}
	return nil
}
