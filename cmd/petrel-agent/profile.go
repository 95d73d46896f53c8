package main

import (
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// startProfiles starts a CPU profile into cpu and arranges a heap profile
// (every allocation since start: go tool pprof -sample_index=alloc_space)
// into heap; the returned func writes and closes them at exit. Empty paths
// are skipped. For benchmarks (routebench -profile) and field diagnosis.
func startProfiles(cpu, heap string) (func(), error) {
	stop := func() {}
	if cpu != "" {
		f, err := os.Create(cpu)
		if err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
		stop = func() { pprof.StopCPUProfile(); f.Close() }
	}
	if heap == "" {
		return stop, nil
	}
	f, err := os.Create(heap)
	if err != nil {
		stop()
		return nil, fmt.Errorf("--memprofile: %w", err)
	}
	cpuStop := stop
	return func() {
		cpuStop()
		runtime.GC()
		pprof.WriteHeapProfile(f)
		f.Close()
	}, nil
}
