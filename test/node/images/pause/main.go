// Command pause is the real-node test's sandbox image: it holds a pod's
// namespaces until it is told to stop, as registry.k8s.io/pause does (no
// registry is reachable where the test runs).
package main

import (
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	// PID 1 of the sandbox reaps what it inherits (a shared PID namespace).
	go func() {
		for {
			var ws syscall.WaitStatus
			if _, err := syscall.Wait4(-1, &ws, 0, nil); err != nil {
				time.Sleep(time.Second) // no children yet
			}
		}
	}()
	<-sig
}
