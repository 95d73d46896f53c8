package labtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/petrelnet/petrel/internal/testkit/netnstest"
)

// Proc is a long-running Petrel binary in a namespace, logging to a file.
type Proc struct {
	NS   netnstest.NS
	Cmd  *exec.Cmd
	Log  string
	args []string
	done chan struct{}
}

// StartProc starts bin with args in ns; output goes to logFile.
func StartProc(ns netnstest.NS, logFile, bin string, args ...string) (*Proc, error) {
	p := &Proc{NS: ns, Log: logFile, args: append([]string{bin}, args...)}
	return p, p.Start()
}

// Start (re)starts the process.
func (p *Proc) Start() error {
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.Cmd = exec.Command(p.args[0], p.args[1:]...)
	p.Cmd.Stdout, p.Cmd.Stderr = f, f
	if err := p.NS.Start(p.Cmd); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", filepath.Base(p.args[0]), err)
	}
	p.done = make(chan struct{})
	go func() { p.Cmd.Wait(); f.Close(); close(p.done) }()
	return nil
}

// Signal sends sig and waits up to 10 s for the process to exit.
func (p *Proc) Signal(sig syscall.Signal) error {
	if p.Cmd == nil || p.Cmd.Process == nil {
		return nil
	}
	p.Cmd.Process.Signal(sig)
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		p.Cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not exit on %s", filepath.Base(p.args[0]), sig)
	}
}

// Running reports whether the process is still alive.
func (p *Proc) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}
