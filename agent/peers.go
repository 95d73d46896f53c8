package agent

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
	for i, pc := range c.Peers {
		p, err := pc.toBGP()
		if err == nil {
			err = p.Validate()
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("peers[%d]: %w", i, err))
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}

func (pc PeerConfig) toBGP() (bgp.Peer, error) {
	addr, err := netip.ParseAddr(pc.Address)
	if err != nil {
		return bgp.Peer{}, fmt.Errorf("address: %q: %w", pc.Address, err)
	}
	p := bgp.Peer{
		Address: addr, ASN: pc.ASN, Port: pc.Port, Password: pc.Password, Multihop: pc.Multihop,
		ConnectRetry: time.Duration(pc.ConnectRetry), HoldTime: time.Duration(pc.HoldTime), Keepalive: time.Duration(pc.KeepaliveTime),
		GracefulRestart: bgp.GracefulRestart{
			Enabled:     pc.GracefulRestart.Enabled != nil && *pc.GracefulRestart.Enabled,
			RestartTime: time.Duration(pc.GracefulRestart.RestartTime), HelperOnly: pc.GracefulRestart.HelperOnly,
		},
		BFD:                  bgp.BFD{Enabled: pc.BFD.Enabled, MinTx: time.Duration(pc.BFD.MinTx), MinRx: time.Duration(pc.BFD.MinRx), Multiplier: pc.BFD.Multiplier},
		RouteReflectorClient: pc.RouteReflectorClient, MaxPrefixes: pc.MaxPrefixes,
	}
	if pc.LocalAddress != "" {
		if p.LocalAddress, err = netip.ParseAddr(pc.LocalAddress); err != nil {
			return bgp.Peer{}, fmt.Errorf("localAddress: %q: %w", pc.LocalAddress, err)
		}
	}
	return p, nil
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
