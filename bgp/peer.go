package bgp

import (
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

func secs(d time.Duration) uint64 { return uint64(d / time.Second) }

// toAPIPeer renders a Peer for GoBGP. Each peer carries the unicast family
// of its own address: IPv6 prefixes need an IPv6 next hop, so they travel
// over IPv6 sessions.
func toAPIPeer(p Peer, cfg Config) *api.Peer {
	fam := &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	if p.Address.Is6() {
		fam.Afi = api.Family_AFI_IP6
	}
	afi := &api.AfiSafi{
		Config:            &api.AfiSafiConfig{Family: fam, Enabled: true},
		MpGracefulRestart: &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: p.GracefulRestart.Enabled}},
	}
	// No PrefixLimits: Petrel counts (count.go).
	out := &api.Peer{
		Conf: &api.PeerConf{NeighborAddress: p.Address.String(), PeerAsn: p.ASN, AuthPassword: p.Password},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry: secs(p.ConnectRetry), HoldTime: secs(p.HoldTime), KeepaliveInterval: secs(p.Keepalive),
			// Update sends at once: the pod CIDR is one prefix, there is nothing to batch.
			MinimumAdvertisementInterval: 0,
		}},
		Transport: &api.Transport{RemotePort: uint32(p.Port)},
		AfiSafis:  []*api.AfiSafi{afi},
		GracefulRestart: &api.GracefulRestart{
			Enabled: p.GracefulRestart.Enabled, RestartTime: uint32(secs(p.RestartTime)), HelperOnly: p.HelperOnly,
		},
		RouteReflector: &api.RouteReflector{RouteReflectorClient: p.RouteReflectorClient},
	}
	if p.LocalAddress.IsValid() {
		out.Transport.LocalAddress = p.LocalAddress.String()
	}
	if p.Multihop > 0 {
		out.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.Multihop)}
	}
	if p.BFD.Enabled {
		out.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: uint32(p.BFD.MinTx / time.Microsecond),
			RequiredMinimumReceive:   uint32(p.BFD.MinRx / time.Microsecond),
			DetectionMultiplier:      uint32(p.BFD.Multiplier),
		}
	}
	if p.RouteReflectorClient {
		id := cfg.ClusterID
		if !id.IsValid() {
			id = cfg.RouterID
		}
		out.RouteReflector.RouteReflectorClusterId = id.String()
	}
	return out
}
