package clab

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/petrelnet/petrel/internal/atomicfile"
	"github.com/petrelnet/petrel/internal/nsrun"
)

// NSPrefix starts every namespace the runner creates.
const NSPrefix = "ptllab-"

// State is what a deploy created, written to disk before each step so that
// Destroy works after a crash: exact namespace names and process IDs with
// their command lines (a reused PID is never signalled).
type State struct {
	Lab   string      `json:"lab"`
	Dir   string      `json:"dir"`
	Nodes []NodeState `json:"nodes"`
}

// NodeState is one node's namespace and processes.
type NodeState struct {
	Name   string `json:"name"`
	NetNS  string `json:"netns"`
	Holder Proc   `json:"holder"`
	Procs  []Proc `json:"procs,omitempty"`
}

// Proc is a process the runner started. Group says it leads its own
// process group, which is stopped whole.
type Proc struct {
	PID     int    `json:"pid"`
	Cmdline string `json:"cmdline"`
	Group   bool   `json:"group,omitempty"`
}

// StatePath is where a lab's state lives under workDir.
func StatePath(workDir, lab string) string { return filepath.Join(workDir, lab+".state.json") }

type deployer struct {
	t     *Topology
	dir   string // the topology file's directory: binds are relative to it
	work  string
	state State
}

// Deploy creates the topology and returns the path of its state file. On
// any error it destroys what it made.
func Deploy(topoPath, workDir string) (string, error) {
	t, err := Load(topoPath)
	if err != nil {
		return "", err
	}
	abs, _ := filepath.Abs(topoPath)
	d := &deployer{t: t, dir: filepath.Dir(abs), work: workDir, state: State{Lab: t.Name, Dir: filepath.Dir(abs)}}
	if err := os.MkdirAll(workDir, 0o755); err != nil {
		return "", err
	}
	path := StatePath(workDir, t.Name)
	if _, err := os.Stat(path); err == nil {
		return "", fmt.Errorf("lab %s is already deployed (state %s): destroy it first", t.Name, path)
	}
	if err := d.run(path); err != nil {
		return "", errors.Join(err, Destroy(path))
	}
	return path, nil
}

func (d *deployer) save(path string) error {
	b, _ := json.MarshalIndent(d.state, "", "  ")
	return atomicfile.Write(path, bytes.NewReader(b), 0o644)
}

func (d *deployer) run(path string) error {
	names := d.t.NodeNames()
	for _, name := range names {
		if err := d.node(path, name); err != nil {
			return fmt.Errorf("node %s: %w", name, err)
		}
	}
	for i, l := range d.t.Topology.Links {
		if err := d.link(l); err != nil {
			return fmt.Errorf("topology.links[%d]: %w", i, err)
		}
	}
	for i, name := range names {
		n := d.t.Resolved(name)
		if n.Cmd != "" {
			p, err := d.background(i, n)
			if err != nil {
				return fmt.Errorf("node %s: cmd: %w", name, err)
			}
			d.state.Nodes[i].Procs = append(d.state.Nodes[i].Procs, p)
			if err := d.save(path); err != nil {
				return err
			}
		}
	}
	for i, name := range names {
		for _, c := range d.t.Resolved(name).Exec {
			if out, err := Exec(d.state.Nodes[i], c); err != nil {
				return fmt.Errorf("node %s: exec %q: %v\n%s", name, c, err, out)
			}
		}
	}
	return nil
}

// node makes the namespace and its holder, records them, then mounts and
// sets sysctls inside.
func (d *deployer) node(path, name string) error {
	ns := NodeState{Name: name, NetNS: NSPrefix + d.t.Name + "-" + name}
	d.state.Nodes = append(d.state.Nodes, ns)
	if err := d.save(path); err != nil { // recorded before it exists
		return err
	}
	n, err := nsrun.Create(ns.NetNS)
	if err != nil {
		return err
	}
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "infinity")
	if err := n.Start(holder); err != nil {
		return err
	}
	go holder.Wait()
	i := len(d.state.Nodes) - 1
	d.state.Nodes[i].Holder = Proc{PID: holder.Process.Pid}
	// unshare execs sleep in the same process once the namespace is made.
	if err := waitCmdline(&d.state.Nodes[i].Holder, "sleep"); err != nil {
		return err
	}
	if err := d.save(path); err != nil {
		return err
	}
	return d.setup(d.state.Nodes[i], d.t.Resolved(name))
}

func waitCmdline(p *Proc, want string) error {
	for range 200 {
		if c := cmdline(p.PID); strings.HasPrefix(c, want) {
			p.Cmdline = c
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	return fmt.Errorf("process %d did not become %q", p.PID, want)
}

func cmdline(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

func enter(ns NodeState, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"-t", strconv.Itoa(ns.Holder.PID), "-m", "-n", "--"}, args...)...)
}

func run(ns NodeState, args ...string) error {
	if out, err := enter(ns, args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %v %s", args, err, out)
	}
	return nil
}

func (d *deployer) setup(ns NodeState, n Node) error {
	steps := [][]string{{"ip", "link", "set", "lo", "up"}}
	for _, b := range n.Binds {
		parts := strings.Split(b, ":")
		if len(parts) < 2 || len(parts) > 3 {
			return fmt.Errorf("binds: %q is not src:dst[:ro]", b)
		}
		src, dst := parts[0], parts[1]
		if !filepath.IsAbs(src) {
			src = filepath.Join(d.dir, src)
		}
		// The target must exist: the runner never creates files outside
		// the lab, and the mount is visible only inside the node.
		if _, err := os.Stat(dst); err != nil {
			return fmt.Errorf("binds: target %s: %w", dst, err)
		}
		steps = append(steps, []string{"mount", "--bind", src, dst})
		if len(parts) == 3 && parts[2] == "ro" {
			steps = append(steps, []string{"mount", "-o", "remount,ro,bind", dst})
		}
	}
	for _, p := range strings.Split(n.Labels[LabelTmpfs], ",") {
		if p = strings.TrimSpace(p); p != "" {
			steps = append(steps, []string{"mount", "-t", "tmpfs", "tmpfs", p})
			if o := n.Labels[LabelOwner]; o != "" {
				steps = append(steps, []string{"chown", o, p})
			}
		}
	}
	keys := make([]string, 0, len(n.Sysctls))
	for k := range n.Sysctls {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		steps = append(steps, []string{"sysctl", "-qw", k + "=" + n.Sysctls[k]})
	}
	for _, s := range steps {
		if err := run(ns, s...); err != nil {
			return err
		}
	}
	return nil
}

func (d *deployer) link(l Link) error {
	a, ifA, _ := strings.Cut(l.Endpoints[0], ":")
	b, ifB, _ := strings.Cut(l.Endpoints[1], ":")
	nsA, nsB := NSPrefix+d.t.Name+"-"+a, NSPrefix+d.t.Name+"-"+b
	for _, args := range [][]string{
		{"link", "add", ifA, "netns", nsA, "type", "veth", "peer", "name", ifB, "netns", nsB},
		{"-n", nsA, "link", "set", ifA, "up"},
		{"-n", nsB, "link", "set", ifB, "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %v %s", args, err, out)
		}
	}
	return nil
}

func (d *deployer) background(i int, n Node) (Proc, error) {
	ns := d.state.Nodes[i]
	log, err := os.Create(filepath.Join(d.work, d.t.Name+"-"+ns.Name+".log"))
	if err != nil {
		return Proc{}, err
	}
	defer log.Close()
	cmd := enter(ns, "sh", "-c", n.Cmd)
	cmd.Stdout, cmd.Stderr = log, log
	// Its own process group: the shell may fork the command, and destroy
	// must stop both.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = os.Environ()
	for k, v := range n.Env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if err := cmd.Start(); err != nil {
		return Proc{}, err
	}
	go cmd.Wait()
	p := Proc{PID: cmd.Process.Pid, Group: true}
	return p, waitCmdline(&p, "sh -c")
}

// Exec runs a command inside a node, through a shell.
func Exec(ns NodeState, command string) (string, error) {
	out, err := enter(ns, "sh", "-c", command).CombinedOutput()
	return string(out), err
}

// ReadState loads a lab's state file.
func ReadState(path string) (*State, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var s State
	return &s, json.Unmarshal(b, &s)
}

// Destroy stops every recorded process whose command line still matches,
// deletes every recorded namespace by its exact name, and removes the
// state file. It works from the file alone, so after a crash too.
func Destroy(path string) error {
	s, err := ReadState(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("state %s: %w", path, err)
	}
	var errs []error
	for _, n := range s.Nodes {
		for _, p := range append(slices.Clone(n.Procs), n.Holder) {
			stopProc(p)
		}
		if _, err := os.Stat(filepath.Join("/var/run/netns", n.NetNS)); n.NetNS == "" || err != nil {
			continue // recorded before it was made, or already gone
		}
		if err := (nsrun.NS{Name: n.NetNS}).Delete(); err != nil {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", n.NetNS, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return os.Remove(path)
}

func stopProc(p Proc) {
	if p.PID <= 0 || p.Cmdline == "" || cmdline(p.PID) != p.Cmdline {
		return // gone, or the PID now belongs to someone else
	}
	target := p.PID
	if p.Group {
		target = -p.PID // the group the runner created for it
	}
	syscall.Kill(target, syscall.SIGTERM)
	for range 100 {
		if cmdline(p.PID) != p.Cmdline {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	syscall.Kill(target, syscall.SIGKILL)
}
