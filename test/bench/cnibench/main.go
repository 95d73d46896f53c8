// Command cnibench measures CNI ADD and DEL latency of Petrel's plugin side
// by side with the reference ptp + host-local plugins, in one run on the
// same machine: 200 pods added and deleted one at a time, then from 16
// concurrent runtime workers. Every plugin runs as a separate process inside
// a throwaway "node" namespace, exactly as a container runtime runs it.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

type plugin struct {
	label, bin, conf string
}

func main() { os.Exit(run()) }

func run() int {
	petrel := flag.String("plugin", "bin/petrel-cni", "Petrel's CNI binary")
	refDir := flag.String("ref", "/usr/lib/cni", "directory of the reference plugins")
	pods := flag.Int("pods", 200, "pods per run")
	workers := flag.Int("workers", 16, "concurrent invocations in the concurrent runs")
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "cnibench: needs root (network namespaces)")
		return 2
	}
	tmp, err := os.MkdirTemp("", "cnibench")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(tmp)
	b, err := newBench(*pods)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cnibench:", err)
		return 1
	}
	defer b.cleanup()
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	go func() { <-stop; b.cleanup(); os.Exit(130) }()

	// Both plugin files are copied to one directory, so each is found on
	// CNI_PATH and read from the same file system.
	cniPath := filepath.Join(tmp, "bin")
	os.MkdirAll(cniPath, 0o755)
	for _, f := range [][2]string{{*petrel, "petrel"}, {filepath.Join(*refDir, "ptp"), "ptp"}, {filepath.Join(*refDir, "host-local"), "host-local"}} {
		if err := copyFile(f[0], filepath.Join(cniPath, f[1])); err != nil {
			fmt.Fprintln(os.Stderr, "cnibench:", err)
			return 1
		}
	}
	b.cniPath = cniPath
	plugins := []plugin{
		{"petrel, IPv4", "petrel", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench","type":"petrel","mtu":1450,"ipam":{"type":"petrel","ranges":["10.244.0.0/22"],"dataDir":%q}}`, filepath.Join(tmp, "petrel4"))},
		{"ptp + host-local, IPv4", "ptp", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench","type":"ptp","mtu":1450,"ipMasq":false,"ipam":{"type":"host-local","ranges":[[{"subnet":"10.245.0.0/22"}]],"dataDir":%q}}`, filepath.Join(tmp, "hostlocal"))},
		{"petrel, dual-stack", "petrel", fmt.Sprintf(`{"cniVersion":"1.0.0","name":"bench","type":"petrel","mtu":1450,"ipam":{"type":"petrel","ranges":["10.246.0.0/22","fd00:246::/64"],"dataDir":%q}}`, filepath.Join(tmp, "petrel46"))},
	}
	fmt.Printf("CNI ADD / DEL latency, %d pods, one process per invocation, ms\n\n", *pods)
	fmt.Printf("%-24s %-14s %8s %8s %8s %8s %10s %10s\n", "plugin", "mode", "ADD p50", "ADD p99", "DEL p50", "DEL p99", "ADD+DEL p50", "ADD+DEL p99")
	b.warmup(plugins)
	for _, w := range []int{1, *workers} {
		mode := "sequential"
		if w > 1 {
			mode = fmt.Sprintf("%d concurrent", w)
		}
		for _, p := range plugins {
			add, del, err := b.measure(p, w)
			if err != nil {
				fmt.Fprintf(os.Stderr, "cnibench: %s %s: %v\n", p.label, mode, err)
				return 1
			}
			sum := make([]time.Duration, len(add))
			for i := range add {
				sum[i] = add[i] + del[i]
			}
			fmt.Printf("%-24s %-14s %8s %8s %8s %8s %10s %10s\n", p.label, mode, ms(pct(add, 50)), ms(pct(add, 99)), ms(pct(del, 50)), ms(pct(del, 99)), ms(pct(sum, 50)), ms(pct(sum, 99)))
		}
	}
	return 0
}

type bench struct {
	node    netnstest.NS
	pods    []netnstest.NS
	cniPath string
	once    sync.Once
}

func newBench(pods int) (*bench, error) {
	b := &bench{}
	prefix := fmt.Sprintf("%sbench%d-", netnstest.Prefix, os.Getpid())
	var err error
	if b.node, err = netnstest.Create(prefix + "node"); err != nil {
		return b, err
	}
	for _, args := range [][]string{{"link", "set", "lo", "up"}, {"addr", "add", "10.99.0.1/32", "dev", "lo"}} {
		if out, err := b.node.Run("ip", args...); err != nil {
			b.cleanup()
			return nil, fmt.Errorf("ip %v: %v %s", args, err, out)
		}
	}
	for i := range pods {
		p, err := netnstest.Create(fmt.Sprintf("%spod%03d", prefix, i))
		if err != nil {
			b.cleanup()
			return nil, err
		}
		b.pods = append(b.pods, p)
	}
	return b, nil
}

func (b *bench) cleanup() {
	b.once.Do(func() {
		for _, p := range b.pods {
			p.Delete()
		}
		b.node.Delete()
	})
}

// invoke runs one plugin command in the node namespace and times it.
func (b *bench) invoke(p plugin, cmd string, i int) (time.Duration, error) {
	c := exec.Command(filepath.Join(b.cniPath, p.bin))
	c.Env = []string{"CNI_COMMAND=" + cmd, fmt.Sprintf("CNI_CONTAINERID=bench%03d", i), "CNI_NETNS=" + b.pods[i].Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + b.cniPath}
	c.Stdin = bytes.NewReader([]byte(p.conf))
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	start := time.Now()
	if err := b.node.Start(c); err != nil {
		return 0, err
	}
	err := c.Wait()
	d := time.Since(start)
	if err != nil {
		return d, fmt.Errorf("%s pod %d: %v: %s", cmd, i, err, out.String())
	}
	return d, nil
}

func (b *bench) warmup(plugins []plugin) {
	for _, p := range plugins {
		for range 3 {
			b.invoke(p, "ADD", 0)
			b.invoke(p, "DEL", 0)
		}
	}
}

// measure adds every pod, then deletes every pod, with w invocations in
// flight at a time.
func (b *bench) measure(p plugin, w int) (add, del []time.Duration, err error) {
	n := len(b.pods)
	add, del = make([]time.Duration, n), make([]time.Duration, n)
	for _, phase := range []struct {
		cmd string
		out []time.Duration
	}{{"ADD", add}, {"DEL", del}} {
		errs := make([]error, n)
		var wg sync.WaitGroup
		next := make(chan int)
		for range w {
			wg.Go(func() {
				for i := range next {
					phase.out[i], errs[i] = b.invoke(p, phase.cmd, i)
				}
			})
		}
		for i := range n {
			next <- i
		}
		close(next)
		wg.Wait()
		for _, e := range errs {
			if e != nil {
				return nil, nil, e
			}
		}
	}
	return add, del, nil
}

func pct(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}
