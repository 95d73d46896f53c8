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
	"github.com/petrelnet/petrel/cni"
)

func main() { os.Exit(run()) }

func run() int {
	configPath := flag.String("config", "/etc/petrel/config.yaml", "standalone configuration file")
	uninstall := flag.Bool("uninstall", false, "remove Petrel's routes, nftables table and CNI config from this node, then exit")
	kubeconfig := flag.String("kubeconfig", "", "Kubernetes mode with this kubeconfig (in a pod, the service account is used without it)")
	installCNI := flag.String("install-cni", "", "copy the CNI plugin (--cni-plugin) into this directory, then exit: the DaemonSet's init container")
	cniPlugin := flag.String("cni-plugin", "/opt/cni/bin/petrel", "the CNI plugin binary --install-cni copies")
	flag.Parse()
	if *installCNI != "" {
		if err := cni.InstallBinary(*cniPlugin, *installCNI); err != nil {
			fmt.Fprintln(os.Stderr, "petrel-agent:", err)
			return 1
		}
		return 0
	}

	kube := *kubeconfig != "" || (agent.InCluster() && !*uninstall)
	load := agent.Load
	if kube || *uninstall { // neither needs this node's keys in the file
		load = agent.LoadKubernetes
	}
	cfg, err := load(*configPath)
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
	if kube {
		restCfg, err := agent.RestConfig(*kubeconfig)
		if err != nil {
			log.Error("kubernetes connection", "err", err)
			return 2
		}
		if err := agent.RunKubernetes(ctx, cfg, restCfg, os.Getenv("NODE_NAME"), log); err != nil {
			log.Error("agent failed", "err", err)
			return 1
		}
		return 0
	}
	if err := agent.Run(ctx, cfg, log); err != nil {
		log.Error("agent failed", "err", err)
		return 1
	}
	return 0
}
