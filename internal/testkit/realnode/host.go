package realnode

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// CgroupName is the node's cgroup in every hierarchy: its daemons in
// <name>/node, the kubelet's pods in <name>/kubepods (the kubelet's
// cgroupRoot). Everything in it was started by the harness, so teardown
// kills exactly that.
const CgroupName = "petrel-realnode"

// stateFile records what the harness changed on the machine, so a run
// killed before its teardown is undone by the next one.
const stateFile = "/run/petrel-realnode.json"

// lockFile serializes real nodes across processes (two test binaries at
// once): the holder of its lock owns the machine's node state; the kernel
// drops the lock when the holder dies, killed or not.
const lockFile = "/run/petrel-realnode.lock"

// lockHost waits until no other process runs a real node.
func lockHost() (*os.File, error) {
	f, err := os.OpenFile(lockFile, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", lockFile, err)
	}
	return f, nil
}

// kubeletSysctls are the machine-wide settings the kubelet changes.
var kubeletSysctls = []string{"kernel.panic", "kernel.panic_on_oops", "vm.overcommit_memory",
	"kernel.keys.root_maxkeys", "kernel.keys.root_maxbytes"}

type hostState struct {
	Sysctls map[string]string `json:"sysctls"`
	// MountPoints are directories the machine lacked (a fresh machine
	// has no /etc/cni/net.d) and the harness made for the node's
	// directories to be mounted on, deepest first: removed at the end if
	// still empty.
	MountPoints []string `json:"mountPoints,omitempty"`
}

func sysctlPath(key string) string {
	return filepath.Join("/proc/sys", strings.ReplaceAll(key, ".", "/"))
}

// claimHost undoes a killed run's leftovers, then records the settings
// the kubelet will change, makes the mount points the machine lacks and
// creates the node's cgroups.
func claimHost() error {
	if err := releaseHost(); err != nil {
		return fmt.Errorf("undo a previous run: %w", err)
	}
	st := hostState{Sysctls: map[string]string{}}
	for _, k := range kubeletSysctls {
		b, err := os.ReadFile(sysctlPath(k))
		if err != nil {
			return err
		}
		st.Sysctls[k] = strings.TrimSpace(string(b))
	}
	for _, p := range private {
		for d := p; ; d = filepath.Dir(d) {
			if _, err := os.Stat(d); err == nil {
				break
			}
			st.MountPoints = append(st.MountPoints, d)
		}
	}
	b, _ := json.Marshal(st)
	if err := os.WriteFile(stateFile, b, 0o600); err != nil {
		return err
	}
	for _, p := range private { // recorded first: a killed run's are removed too
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
	}
	for _, h := range hierarchies() {
		for _, d := range []string{CgroupName, CgroupName + "/node"} {
			if err := os.Mkdir(filepath.Join(h, d), 0o755); err != nil && !os.IsExist(err) {
				return err
			}
		}
		// A cpuset cgroup takes tasks only once it has CPUs and memory nodes.
		if filepath.Base(h) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				v, _ := os.ReadFile(filepath.Join(h, f))
				for _, d := range []string{CgroupName, CgroupName + "/node"} {
					os.WriteFile(filepath.Join(h, d, f), v, 0o644)
				}
			}
		}
	}
	return nil
}

// releaseHost kills every process in the node's cgroups, removes them,
// restores the recorded settings and removes the mount points claimHost
// made. Without a record it does nothing.
func releaseHost() error {
	b, err := os.ReadFile(stateFile)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	var st hostState
	if err := json.Unmarshal(b, &st); err != nil {
		return fmt.Errorf("%s: %w", stateFile, err)
	}
	if err := killCgroup(); err != nil {
		return err
	}
	if err := removeCgroups(); err != nil {
		return err
	}
	for k, v := range st.Sysctls {
		if err := os.WriteFile(sysctlPath(k), []byte(v), 0o644); err != nil {
			return fmt.Errorf("restore %s=%s: %w", k, v, err)
		}
	}
	for _, d := range st.MountPoints {
		// Not empty: something else put files there since; it stays.
		if err := os.Remove(d); err != nil && !os.IsNotExist(err) && !errors.Is(err, syscall.ENOTEMPTY) {
			return fmt.Errorf("remove the mount point made for the node: %w", err)
		}
	}
	return os.Remove(stateFile)
}

// hierarchies are the mounted cgroup hierarchies (v1 controllers, the
// named systemd one, and a unified one), or the one cgroup2 tree.
func hierarchies() []string {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}
	}
	entries, _ := os.ReadDir("/sys/fs/cgroup")
	var out []string
	for _, e := range entries {
		p := filepath.Join("/sys/fs/cgroup", e.Name())
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err == nil {
				out = append(out, p)
			}
		}
	}
	return out
}

// procsUnder lists the PIDs in every cgroup under dir.
func procsUnder(dir string) []int {
	var pids []int
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// killCgroup SIGKILLs everything in the node's cgroups (in every
// hierarchy: runc moves containers into the kubelet's cgroups in each)
// until none is left.
func killCgroup() error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pids []int
		for _, h := range hierarchies() {
			pids = append(pids, procsUnder(filepath.Join(h, CgroupName))...)
		}
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v still in cgroup %s", pids, CgroupName)
		}
		for _, pid := range pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// removeCgroups removes the node's cgroups, deepest first.
func removeCgroups() error {
	for _, h := range hierarchies() {
		var dirs []string
		filepath.WalkDir(filepath.Join(h, CgroupName), func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		for _, d := range dirs {
			var err error
			// A killed process leaves its cgroup once it is reaped.
			for range 50 {
				if err = syscall.Rmdir(d); err == nil || os.IsNotExist(err) {
					break
				}
				time.Sleep(100 * time.Millisecond)
			}
			if err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("remove cgroup %s: %w", d, err)
			}
		}
	}
	return nil
}

// cgexec is a shell prefix that moves the shell into the node's cgroups
// and execs the command given as its arguments.
func cgexec() []string {
	var moves []string
	for _, h := range hierarchies() {
		if filepath.Base(h) == "unified" {
			continue // a v1 hybrid's cgroup2 tree holds no controllers
		}
		moves = append(moves, fmt.Sprintf("echo $$ > %s/%s/node/cgroup.procs", h, CgroupName))
	}
	return []string{"sh", "-ec", strings.Join(moves, "; ") + "; exec \"$@\"", "sh"}
}
