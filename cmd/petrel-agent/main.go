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
	"github.com/petrelnet/petrel/agent/config"
	"github.com/petrelnet/petrel/agent/kube"
	"github.com/petrelnet/petrel/agent/standalone"
	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/internal/version"
)

func main() { os.Exit(run()) }

func run() int {
	configPath := flag.String("config", "/etc/petrel/config.yaml", "standalone configuration file")
	uninstall := flag.Bool("uninstall", false, "remove Petrel's routes, nftables table and CNI config from this node, then exit")
	kubeconfig := flag.String("kubeconfig", "", "Kubernetes mode with this kubeconfig (in a pod, the service account is used without it)")
	installCNI := flag.String("install-cni", "", "copy the CNI plugin (--cni-plugin) into this directory, then exit: the DaemonSet's init container")
	cniPlugin := flag.String("cni-plugin", "/opt/cni/bin/petrel", "the CNI plugin binary --install-cni copies")
	showVersion := flag.Bool("version", false, "print the version and exit")
	flag.Parse()
	if *showVersion {
		fmt.Println("petrel-agent", version.Version)
		return 0
	}
	if *installCNI != "" {
		if err := cni.InstallBinary(*cniPlugin, *installCNI); err != nil {
			fmt.Fprintln(os.Stderr, "petrel-agent:", err)
			return 1
		}
		return 0
	}

	inKube := *kubeconfig != "" || (kube.InCluster() && !*uninstall)
	load := config.Load
	if inKube || *uninstall { // neither needs this node's keys in the file
		load = config.LoadKubernetes
	}
	cfg, err := load(*configPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "petrel-agent: bad config:", err)
		return 2
	}
	node := cfg.NodeName
	if inKube {
		node = os.Getenv("NODE_NAME") // the file has no nodeName in Kubernetes mode
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.Level()})).With("node", node)
	if *uninstall {
		if err := agent.Uninstall(cfg, log); err != nil {
			log.Error("uninstall failed", "err", err)
			return 1
		}
		return 0
	}
	src, err := source(cfg, inKube, *kubeconfig, log)
	if err != nil {
		log.Error("agent cannot start", "err", err)
		return 2
	}
	dp, err := agent.KernelDataplane(cfg, log)
	if err != nil {
		log.Error("agent cannot start", "err", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := agent.Run(ctx, cfg, log, src, dp); err != nil {
		log.Error("agent failed", "err", err)
		return 1
	}
	return 0
}

// source picks where the desired state comes from: the cluster, or the
// configuration file alone.
func source(cfg *config.Config, inKube bool, kubeconfig string, log *slog.Logger) (agent.Source, error) {
	if !inKube {
		return standalone.New(cfg, log)
	}
	restCfg, err := kube.RestConfig(kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("kubernetes connection: %w", err)
	}
	return kube.NewSource(cfg, restCfg, os.Getenv("NODE_NAME"), log)
}
