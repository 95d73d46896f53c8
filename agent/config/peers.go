package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/petrelnet/petrel/bgp"
)

// BGPPeers converts the peers section, naming each bad field by its path.
func (c *Config) BGPPeers() ([]bgp.Peer, error) {
	var out []bgp.Peer
	var errs []error
	seen := map[netip.Addr]int{}
	self, _ := netip.ParseAddr(c.RouterID)
	for i, pc := range c.Peers {
		p, err := pc.toBGP()
		if err == nil {
			err = p.Validate()
		}
		if err == nil {
			if j, dup := seen[p.Address]; dup {
				err = fmt.Errorf("address: %s is also peers[%d]: one session per address", p.Address, j)
			} else if p.Address == self {
				err = fmt.Errorf("address: %s is this node's own routerID", p.Address)
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("peers[%d]: %w", i, err))
			continue
		}
		seen[p.Address] = i
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

func (pc PeerConfig) toBGP() (bgp.Peer, error) {
	addr, err := netip.ParseAddr(pc.Address)
	if err != nil {
		return bgp.Peer{}, fmt.Errorf("address: %q: %w", pc.Address, err)
	}
	p := pc.PeerOptions.Apply(bgp.Peer{Address: addr, ASN: pc.ASN, Password: pc.Password})
	if pc.LocalAddress != "" {
		if p.LocalAddress, err = netip.ParseAddr(pc.LocalAddress); err != nil {
			return bgp.Peer{}, fmt.Errorf("localAddress: %q: %w", pc.LocalAddress, err)
		}
	}
	return p, nil
}

// Apply sets o's session settings on p.
func (o PeerOptions) Apply(p bgp.Peer) bgp.Peer {
	p.Port, p.Multihop = o.Port, o.Multihop
	p.ConnectRetry, p.HoldTime, p.Keepalive = time.Duration(o.ConnectRetry), time.Duration(o.HoldTime), time.Duration(o.KeepaliveTime)
	p.GracefulRestart = bgp.GracefulRestart{
		Enabled:     o.GracefulRestart.Enabled != nil && *o.GracefulRestart.Enabled,
		RestartTime: time.Duration(o.GracefulRestart.RestartTime), HelperOnly: o.GracefulRestart.HelperOnly,
	}
	p.BFD = bgp.BFD{Enabled: o.BFD.Enabled, MinTx: time.Duration(o.BFD.MinTx), MinRx: time.Duration(o.BFD.MinRx), Multiplier: o.BFD.Multiplier}
	p.RouteReflectorClient, p.MaxPrefixes = o.RouteReflectorClient, o.MaxPrefixes
	off := func(b *bool) bool { return b != nil && !*b }
	p.Withhold = bgp.Withhold{PodCIDRs: off(o.Advertise.PodCIDRs), Services: off(o.Advertise.Services)}
	return p
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("logLevel: %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// Level is the configured log level.
func (c *Config) Level() slog.Level {
	l, _ := parseLevel(c.LogLevel)
	return l
}
