package agent

import (
	"context"
	"fmt"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/petrelnet/petrel/bgp"
)

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
		return fmt.Errorf("bgp settings: %w", err)
	}
	a.log.Info("bgp settings changed, restarting the speaker", "asn", want.ASN, "routeReflector", want.RouteReflector, "was", a.bgpCfg.ASN)
	old := a.bgpCfg
	a.speaker.Stop()
	err := a.startSpeaker(ctx, want)
	if err == nil {
		return nil
	}
	// Back to the settings that worked, so that the node keeps its peers.
	if err2 := a.startSpeaker(ctx, old); err2 != nil {
		return fmt.Errorf("start bgp with %+v: %w; and again with the previous settings: %v", want, err, err2)
	}
	return fmt.Errorf("start bgp with the new settings: %w", err)
}

// speakerCollector exports the current speaker's metrics; the speaker may
// be replaced while the registry keeps this collector.
type speakerCollector struct {
	cur  interface{ Load() *Speaker }
	from func(Speaker) prometheus.Collector
}

func (speakerCollector) Describe(chan<- *prometheus.Desc) {} // unchecked: the peer set varies

func (c speakerCollector) Collect(ch chan<- prometheus.Metric) {
	if s := c.cur.Load(); s != nil {
		c.from(*s).Collect(ch)
	}
}
