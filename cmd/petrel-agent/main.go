// Command petrel-agent is Petrel's node agent: it announces the node's pod
// CIDRs over BGP, installs the routes it learns, and writes the CNI config.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/petrelnet/petrel/agent"
	"github.com/petrelnet/petrel/agent/config"
	"github.com/petrelnet/petrel/agent/kube"
	"github.com/petrelnet/petrel/agent/standalone"
	"github.com/petrelnet/petrel/cni"
	"github.com/petrelnet/petrel/internal/version"
)

func main() { os.Exit(run()) }

// gcPercent is the agent's GOGC unless the environment sets one.
const gcPercent = 50

// install is the init container's work: Petrel's plugin, then the chained
// reference plugins where the node needs them for the conflist version the
// config asks for (the default when there is no config file).
func install(plugin, dir, configPath string) int {
	if err := cni.InstallBinary(plugin, dir); err != nil {
		fmt.Fprintln(os.Stderr, "petrel-agent:", err)
		return 1
	}
	need := cni.DefaultConfListVersion
	if cfg, err := config.LoadKubernetes(configPath); err == nil {
		need = cfg.CNIVersion
	} else if !errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintln(os.Stderr, "petrel-agent: bad config:", err)
		return 2
	}
	said, err := cni.InstallChained(filepath.Dir(plugin), dir, need)
	for _, s := range said {
		fmt.Println("install-cni:", s)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "petrel-agent:", err)
		return 1
	}
	return 0
}

func run() int {
	configPath := flag.String("config", "/etc/petrel/config.yaml", "standalone configuration file")
	uninstall := flag.Bool("uninstall", false, "remove Petrel's routes, nftables table and CNI config from this node, then exit")
	kubeconfig := flag.String("kubeconfig", "", "Kubernetes mode with this kubeconfig (in a pod, the service account is used without it)")
	installCNI := flag.String("install-cni", "", "copy the CNI plugin (--cni-plugin) into this directory, and the reference portmap and loopback beside it where the node has none or none that reads the configured cniVersion, then exit: the DaemonSet's init container")
	cniPlugin := flag.String("cni-plugin", "/opt/cni/bin/petrel", "the CNI plugin binary --install-cni copies")
	showVersion := flag.Bool("version", false, "print the version and exit")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the agent's run to this file (written when it stops)")
	memProfile := flag.String("memprofile", "", "write a heap profile (allocations since start) to this file when the agent stops")
	flag.Parse()
	if os.Getenv("GOGC") == "" {
		// A node agent's memory counts more than its CPU during a burst of
		// updates: collect at half the heap growth of Go's default
		// (100,000 routes: about 20 MB less at the peak, installed 25 %
		// slower, still sooner than FRR; docs/benchmarks.md). GOGC set in
		// the environment wins.
		debug.SetGCPercent(gcPercent)
	}
	if *showVersion {
		fmt.Println("petrel-agent", version.Version)
		return 0
	}
	if *installCNI != "" {
		return install(*cniPlugin, *installCNI, *configPath)
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
	stopProfiles, err := startProfiles(*cpuProfile, *memProfile)
	if err != nil {
		log.Error("agent cannot start", "err", err)
		return 2
	}
	defer stopProfiles()
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
