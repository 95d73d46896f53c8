package clab

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

func TestLoadRejects(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown key": "name: x\ntopology:\n  nodes:\n    a: {kind: linux, imagee: y}\n",
		"not linux":   "name: x\ntopology:\n  nodes:\n    a: {kind: nokia_srlinux}\n",
		"bad link":    "name: x\ntopology:\n  nodes:\n    a: {kind: linux}\n  links:\n    - endpoints: [\"a:eth1\", \"c:eth1\"]\n",
	} {
		p := filepath.Join(dir, "t.yml")
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := Load(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestDeployExecDestroy(t *testing.T) {
	netnstest.RequireRoot(t)
	netnstest.RequireTool(t, "nsenter")
	hostname, _ := os.ReadFile("/etc/hostname")
	work := t.TempDir()
	path, err := Deploy("testdata/two.clab.yml", work)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Destroy(path) })
	s, err := ReadState(path)
	if err != nil || len(s.Nodes) != 2 {
		t.Fatalf("state: %v %+v", err, s)
	}
	a, b := s.Nodes[0], s.Nodes[1]
	if out, err := Exec(a, "ping -c1 -W2 10.123.0.2"); err != nil {
		t.Fatalf("a cannot reach b over the link: %v\n%s", err, out)
	}
	if out, _ := Exec(a, "cat /etc/hostname"); out != "hello from the lab\n" {
		t.Fatalf("bind mount inside a: %q", out)
	}
	if out, _ := Exec(b, "cat /etc/hostname"); out != string(hostname) {
		t.Fatalf("b sees a's bind mount: %q", out)
	}
	if _, err := os.Stat("/mnt/only-in-a"); err == nil {
		t.Fatal("a's tmpfs leaked to the host")
	}
	if out, _ := Exec(a, "sysctl -n net.ipv4.ip_forward"); strings.TrimSpace(out) != "1" {
		t.Fatalf("sysctl in a: %q", out)
	}
	if got, _ := os.ReadFile("/etc/hostname"); string(got) != string(hostname) {
		t.Fatal("the host's /etc/hostname changed")
	}
	// Destroy from the state file alone, as after a crash of the deployer.
	pids := []int{a.Holder.PID, b.Holder.PID, a.Procs[0].PID}
	if err := Destroy(path); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{a.NetNS, b.NetNS} {
		if _, err := os.Stat("/var/run/netns/" + ns); err == nil {
			t.Errorf("namespace %s left behind", ns)
		}
	}
	for _, pid := range pids {
		if c := cmdline(pid); c != "" {
			t.Errorf("process %d (%s) left running", pid, c)
		}
	}
	// The shell's child too: nothing runs in the cmd's process group.
	if live := groupMembers(a.Procs[0].PID); len(live) > 0 {
		t.Errorf("processes of a's cmd group left running: %v", live)
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("state file left behind")
	}
}

// groupMembers lists live (not zombie) processes in process group pgid.
func groupMembers(pgid int) []string {
	var out []string
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			out = append(out, d)
		}
	}
	return out
}
