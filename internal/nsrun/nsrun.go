// Package nsrun handles named network namespaces for Petrel's lab tools:
// create one without touching the caller's, run code or commands inside it,
// delete it by its exact name.
package nsrun

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// NS is a named network namespace under /var/run/netns.
type NS struct {
	Name string
}

// Path is the namespace's bind mount, the value for CNI_NETNS.
func (n NS) Path() string { return filepath.Join("/var/run/netns", n.Name) }

// Create makes a named namespace without touching the caller's: the new
// namespace is created on a locked thread that is then switched back.
func Create(name string) (NS, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return NS{}, err
	}
	defer orig.Close()
	h, err := netns.NewNamed(name)
	if err != nil {
		return NS{}, fmt.Errorf("create netns %s: %w", name, err)
	}
	h.Close()
	if err := netns.Set(orig); err != nil {
		// The thread is in the wrong namespace: let it die with the goroutine.
		panic(fmt.Sprintf("cannot return to the original netns: %v", err))
	}
	return NS{Name: name}, nil
}

// Delete removes the namespace by its exact name.
func (n NS) Delete() error { return netns.DeleteNamed(n.Name) }

// Do runs fn on a thread inside the namespace. Sockets made in fn stay in
// the namespace after fn returns, so fn should only create them.
func (n NS) Do(fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return err
	}
	defer orig.Close()
	target, err := netns.GetFromName(n.Name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", n.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return fmt.Errorf("enter netns %s: %w", n.Name, err)
	}
	ferr := fn()
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("cannot return to the original netns: %v", err))
	}
	return ferr
}

// Start starts cmd inside the namespace: the child is forked from a thread
// that is in it, so it inherits the namespace and nothing else changes.
func (n NS) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// Run runs a command inside the namespace (the zero NS: the caller's own)
// and returns its combined output.
func (n NS) Run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	start := cmd.Start
	if n.Name != "" {
		start = func() error { return n.Start(cmd) }
	}
	if err := start(); err != nil {
		return "", err
	}
	err := cmd.Wait()
	return out.String(), err
}
