// Package labtest runs real routing daemons and Petrel binaries inside
// throwaway network namespaces for the lab tests and benchmarks. Every
// process it starts is its own child, stopped by its own handle.
package labtest

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
	"github.com/petrelnet/petrel/internal/testkit/wait"
)

// FRRDir is where Debian installs the FRR daemons.
const FRRDir = "/usr/lib/frr"

// FRR is one FRR router (zebra + bgpd) in a namespace, with its own
// runtime directory owned by frr:frr (the daemons drop privileges).
type FRR struct {
	NS                netnstest.NS
	Dir               string
	conf, bfdConf     string
	zebra, bgpd, bfdd *exec.Cmd
}

// StartFRR starts zebra and bgpd with bgpdConf in ns and waits until bgpd
// answers on its vty socket.
func StartFRR(ns netnstest.NS, dir, bgpdConf string) (*FRR, error) {
	return StartFRRWithBFD(ns, dir, bgpdConf, "")
}

// StartFRRWithBFD also runs bfdd with bfddConf (when not empty), for
// neighbors configured with "neighbor X bfd".
func StartFRRWithBFD(ns netnstest.NS, dir, bgpdConf, bfddConf string) (*FRR, error) {
	f := &FRR{NS: ns, Dir: dir, conf: bgpdConf, bfdConf: bfddConf}
	if err := f.prepare(); err != nil {
		return nil, err
	}
	return f, f.Start()
}

func (f *FRR) prepare() error {
	u, err := user.Lookup("frr")
	if err != nil {
		return fmt.Errorf("frr user (is Debian's frr installed?): %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return err
	}
	files := map[string]string{"zebra.conf": "hostname tor\n", "bgpd.conf": f.conf, "vtysh.conf": "", "bfdd.conf": f.bfdConf}
	for name, body := range files {
		p := filepath.Join(f.Dir, name)
		if err := os.WriteFile(p, []byte(body), 0o640); err != nil {
			return err
		}
		if err := os.Chown(p, uid, gid); err != nil {
			return err
		}
	}
	return os.Chown(f.Dir, uid, gid)
}

func (f *FRR) daemon(name string) *exec.Cmd {
	d := f.Dir
	cmd := exec.Command(filepath.Join(FRRDir, name), "-u", "frr", "-g", "frr",
		"-z", filepath.Join(d, "zserv.api"), "--vty_socket", d,
		"-f", filepath.Join(d, name+".conf"), "-i", filepath.Join(d, name+".pid"), "-P", "0",
		"--log", "file:"+filepath.Join(d, name+".log"))
	return cmd
}

// Start (re)starts both daemons.
func (f *FRR) Start() error {
	f.zebra = f.daemon("zebra")
	if err := f.NS.Start(f.zebra); err != nil {
		return fmt.Errorf("start zebra: %w", err)
	}
	if _, err := wait.For(5*time.Second, "zebra socket", func() bool { _, err := os.Stat(filepath.Join(f.Dir, "zserv.api")); return err == nil }); err != nil {
		f.Kill()
		return fmt.Errorf("zebra in %s did not open its socket: %w", f.NS.Name, err)
	}
	if f.bfdConf != "" {
		f.bfdd = f.daemon("bfdd")
		if err := f.NS.Start(f.bfdd); err != nil {
			f.Kill()
			return fmt.Errorf("start bfdd: %w", err)
		}
	}
	f.bgpd = f.daemon("bgpd")
	if err := f.NS.Start(f.bgpd); err != nil {
		f.Kill()
		return fmt.Errorf("start bgpd: %w", err)
	}
	_, err := wait.For(10*time.Second, "bgpd answering", func() bool {
		out, err := f.Vtysh("show bgp summary json")
		return err == nil && (strings.Contains(out, "routerId") || strings.Contains(out, "No BGP neighbors"))
	})
	if err != nil {
		f.Kill()
		return fmt.Errorf("bgpd in %s not answering: %w", f.NS.Name, err)
	}
	return nil
}

// Kill stops both daemons at once (SIGKILL), as a crash would.
func (f *FRR) Kill() {
	for _, c := range []*exec.Cmd{f.bgpd, f.bfdd, f.zebra} {
		if c != nil && c.Process != nil {
			c.Process.Kill()
			c.Wait()
		}
	}
	f.bgpd, f.bfdd, f.zebra = nil, nil, nil
	os.Remove(filepath.Join(f.Dir, "zserv.api"))
}

// Vtysh runs one vtysh command against this instance.
func (f *FRR) Vtysh(command string) (string, error) {
	out, err := exec.Command("vtysh", "--vty_socket", f.Dir, "-c", command).CombinedOutput()
	return string(out), err
}

// Configure runs configuration commands ("router bgp 65000", "neighbor
// ...") in vtysh's configure mode.
func (f *FRR) Configure(lines ...string) (string, error) {
	args := []string{"--vty_socket", f.Dir, "-c", "configure terminal"}
	for _, l := range lines {
		args = append(args, "-c", l)
	}
	out, err := exec.Command("vtysh", args...).CombinedOutput()
	return string(out), err
}

// PIDs are the daemons' process IDs.
func (f *FRR) PIDs() []int {
	var out []int
	for _, c := range []*exec.Cmd{f.zebra, f.bfdd, f.bgpd} {
		if c != nil && c.Process != nil {
			out = append(out, c.Process.Pid)
		}
	}
	return out
}
