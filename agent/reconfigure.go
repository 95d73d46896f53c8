package agent

import (
	"context"
	"fmt"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrelnet/petrel/bgp"
)

// clusterBGP is the config file's speaker settings with the cluster's AS
// and route reflector role.
func (a *agent) clusterBGP(v clusterView) bgp.Config {
	c := a.baseBGP
	c.ASN = v.asn
	c.RouteReflector = c.RouteReflector || v.routeReflector
	c.ClusterID = v.clusterID
	return c
}

// reconfigure replaces the speaker when its global settings change (the
// AS, the route reflector role): BGP cannot change them on a running
// session. Every session restarts: learned routes leave the kernel at the
// next sync and come back as the new sessions come up (about 2 s in the
// lab). Changing the AS is disruptive on any router; the peers must
// expect the new AS too.
func (a *agent) reconfigure(ctx context.Context, want bgp.Config) error {
	if reflect.DeepEqual(want, a.bgpCfg) {
		return nil
	}
	if err := want.Validate(); err != nil {
		return fmt.Errorf("bgp settings from the cluster: %w", err)
	}
	a.log.Info("bgp settings changed, restarting the speaker", "asn", want.ASN, "routeReflector", want.RouteReflector, "was", a.bgpCfg.ASN)
	a.speaker.Stop()
	sp, err := bgp.New(ctx, want, a.log.With("component", "bgp"), a.poke)
	if err != nil {
		// Back to the settings that worked, so that the node keeps its peers.
		sp, err2 := bgp.New(ctx, a.bgpCfg, a.log.With("component", "bgp"), a.poke)
		if err2 != nil {
			return fmt.Errorf("start bgp with %+v: %w; and again with the previous settings: %v", want, err, err2)
		}
		a.speaker = sp
		a.current.Store(sp)
		return fmt.Errorf("start bgp with the cluster's settings: %w", err)
	}
	a.speaker, a.bgpCfg = sp, want
	a.current.Store(sp)
	return nil
}

// speakerCollector exports the current speaker's GoBGP metrics; the
// speaker may be replaced while the registry keeps this collector.
type speakerCollector struct {
	cur interface{ Load() *bgp.Speaker }
}

func (speakerCollector) Describe(chan<- *prometheus.Desc) {} // unchecked: the peer set varies

func (c speakerCollector) Collect(ch chan<- prometheus.Metric) {
	if s := c.cur.Load(); s != nil {
		s.Collector().Collect(ch)
	}
}
