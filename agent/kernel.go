package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netns"

	"github.com/petrelnet/petrel/agent/config"
	"github.com/petrelnet/petrel/bgp"
	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/internal/rtproto"
	"github.com/petrelnet/petrel/ipam"
	"github.com/petrelnet/petrel/policy"
	"github.com/petrelnet/petrel/route"
)

// KernelDataplane is the real dataplane of this node: GoBGP, the kernel's
// main routing table (Petrel's protocol only), Petrel's nftables table and
// the CNI config directory.
func KernelDataplane(cfg *config.Config, log *slog.Logger) (Dataplane, error) {
	kernel, err := route.OpenKernel(netns.None(), rtproto.BGP)
	if err != nil {
		return Dataplane{}, err
	}
	routes := route.New(kernel, log.With("component", "routes"))
	syncer, err := policy.NewSyncer(netns.None(), log.With("component", "policy"))
	if err != nil {
		return Dataplane{}, err
	}
	fw := policy.NewFirewall(syncer, log.With("component", "policy"))
	return Dataplane{
		NewSpeaker: func(ctx context.Context, c bgp.Config, notify bgp.Notify) (Speaker, error) {
			return bgp.New(ctx, c, log.With("component", "bgp"), notify)
		},
		Routes:   routes,
		Firewall: fw,
		CNI:      confDir(cfg.CNIConfDir),
		Watch: func(ctx context.Context, poke func(), drift func(string)) error {
			stopRoutes, err := route.Watch(netns.None(), rtproto.BGP, func(stale bool) {
				if stale {
					routes.Invalidate()
					drift("route")
				}
				poke()
			})
			if err != nil {
				return err
			}
			stopPolicy, err := policy.Watch(netns.None(), func(object string) {
				fw.Invalidate()
				drift(object)
				poke()
			}, func() {
				log.Warn("the nftables change monitor lost events (a transaction larger than its buffer); watching again, and the next resync repairs what others changed meanwhile")
			})
			if err != nil {
				stopRoutes()
				return err
			}
			go func() { <-ctx.Done(); stopRoutes(); stopPolicy() }()
			return nil
		},
		Metrics: func(s Speaker) prometheus.Collector { return s.(*bgp.Speaker).Collector() },
		ReleaseOrphans: func(now time.Time) ([]ipam.Allocation, error) {
			return cni.ReleaseOrphans(cfg.DataDir, cni.PluginType, cni.OrphanMinAge, now)
		},
	}, nil
}

var (
	_ Speaker    = (*bgp.Speaker)(nil)
	_ RouteTable = (*route.Programmer)(nil)
	_ Firewall   = (*policy.Firewall)(nil)
	_ CNIConfig  = confDir("")
)

// confDir writes the conflist into a CNI config directory.
type confDir string

func (d confDir) Write(c cni.ConfList) (bool, error) { return cni.WriteConfList(string(d), c) }

// Uninstall removes what the agent owns on this node: its kernel routes
// (protocol 61), its nftables table and the CNI config it wrote. Pods keep
// their attachments; those go with each pod's CNI DEL.
func Uninstall(c *config.Config, log *slog.Logger) error {
	kernel, err := route.OpenKernel(netns.None(), rtproto.BGP)
	if err != nil {
		return err
	}
	res, err := route.New(kernel, log).Sync(context.Background(), nil)
	if err != nil {
		return fmt.Errorf("remove routes: %w", err)
	}
	syncer, err := policy.NewSyncer(netns.None(), log)
	if err != nil {
		return err
	}
	if err := syncer.Remove(); err != nil {
		return fmt.Errorf("remove nftables table: %w", err)
	}
	conf := filepath.Join(c.CNIConfDir, cni.ConfListFile)
	if err := os.Remove(conf); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	log.Info("uninstalled", "routesRemoved", res.Removed, "removed", conf)
	return nil
}
