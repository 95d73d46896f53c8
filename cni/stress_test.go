package cni_test

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/ipam"
)

// TestConcurrentAdd200 starts 200 pods from 16 plugin processes at once, as
// a node does after a reboot: every pod gets its own address and is reachable.
func TestConcurrentAdd200(t *testing.T) {
	n := newNode(t)
	const pods, workers = 200, 16
	nss := make([]netnstest.NS, pods)
	for i := range nss {
		nss[i] = newPodNS(t)
	}
	results := make([]*current.Result, pods)
	errs := make([]error, pods)
	forEach(pods, workers, func(i int) {
		out, err := n.run("ADD", fmt.Sprintf("c%03d", i), nss[i].Path(), "eth0", n.conf())
		if err != nil {
			errs[i] = err
			return
		}
		r, perr := current.NewResult(out)
		errs[i] = perr
		if perr == nil {
			results[i] = r.(*current.Result)
		}
	})
	seen := map[string]int{}
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("ADD c%03d: %v", i, errs[i])
		}
		for _, ipc := range r.IPs {
			a := ipc.Address.IP.String()
			if j, dup := seen[a]; dup {
				t.Fatalf("c%03d and c%03d both got %s", j, i, a)
			}
			seen[a] = i
		}
	}
	if len(seen) != 2*pods {
		t.Fatalf("%d distinct addresses, want %d", len(seen), 2*pods)
	}
	for a := range seen {
		ping(t, n.ns, a)
	}
	forEach(pods, workers, func(i int) {
		if _, err := n.run("DEL", fmt.Sprintf("c%03d", i), nss[i].Path(), "eth0", n.conf()); err != nil {
			errs[i] = err
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("DEL c%03d: %v", i, err)
		}
	}
	n.assertClean()
}

func forEach(count, workers int, fn func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Go(func() {
			for i := range next {
				fn(i)
			}
		})
	}
	for i := range count {
		next <- i
	}
	close(next)
	wg.Wait()
}

// TestGCAfterCrash kills plugin processes in the middle of ADD, leaks an
// allocation the way a crash between allocation and wiring would, then runs
// GC: the store is intact and only the valid attachment is left.
func TestGCAfterCrash(t *testing.T) {
	n := newNode(t)
	keep := n.add("keep")
	n.add("stale")
	for i := range 12 {
		p := newPodNS(t)
		cmd := exec.Command(pluginBin)
		cmd.Env = []string{"CNI_COMMAND=ADD", fmt.Sprintf("CNI_CONTAINERID=crash%d", i), "CNI_NETNS=" + p.Path(), "CNI_IFNAME=eth0", "CNI_PATH=/usr/lib/cni"}
		cmd.Stdin = strings.NewReader(n.conf())
		if err := n.ns.Start(cmd); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Duration(rand.IntN(6000)) * time.Microsecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
	s, err := ipam.Open(n.dataDir, time.Second)
	if err != nil {
		t.Fatalf("store after killed plugins: %v", err)
	}
	_, err = s.Allocate(mustRanges(t, n.ranges), ipam.Owner{Network: "petrel", ContainerID: "leak", IfName: "eth0"}, time.Now())
	s.Close()
	if err != nil {
		t.Fatal(err)
	}

	gc := map[string]any{}
	json.Unmarshal([]byte(n.conf()), &gc)
	gc["cni.dev/valid-attachments"] = []map[string]string{{"containerID": "keep", "ifname": "eth0"}}
	b, _ := json.Marshal(gc)
	if _, err := n.run("GC", "", "", "", string(b)); err != nil {
		t.Fatalf("GC: %v", err)
	}
	var left []string
	for _, a := range n.allocations() {
		left = append(left, a.ContainerID)
	}
	if fmt.Sprint(left) != "[keep keep]" {
		t.Fatalf("after GC allocations of %v, want keep's two", left)
	}
	want := "veth " + keep.res.Interfaces[0].Name + ", route " + keep.ip(false) + "/32, route " + keep.ip(true) + "/128"
	if got := n.leftovers(); got != want {
		t.Fatalf("after GC the node has %q, want only %q", got, want)
	}
	ping(t, n.ns, keep.ip(false))
	if err := n.check(keep); err != nil {
		t.Fatalf("CHECK of the kept pod after GC: %v", err)
	}
}

func mustRanges(t *testing.T, ss []string) []ipam.Range {
	var out []ipam.Range
	for _, s := range ss {
		r, err := ipam.ParseRange(s)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}
