// Command petrel-agent is Petrel's node agent: it announces the node's pod
// CIDRs over BGP, installs the routes it learns, and writes the CNI config.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/petrelnet/petrel/agent"
)

func main() { os.Exit(run()) }

func run() int {
	configPath := flag.String("config", "/etc/petrel/config.yaml", "standalone configuration file")
	uninstall := flag.Bool("uninstall", false, "remove Petrel's routes and CNI config from this node, then exit")
	flag.Parse()

	cfg, err := agent.Load(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "petrel-agent: bad config:", err)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.Level()})).With("node", cfg.NodeName)
	if *uninstall {
		if err := agent.Uninstall(cfg, log); err != nil {
			log.Error("uninstall failed", "err", err)
			return 1
		}
		return 0
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := agent.Run(ctx, cfg, log); err != nil {
		log.Error("agent failed", "err", err)
		return 1
	}
	return 0
}
