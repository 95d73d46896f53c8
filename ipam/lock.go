package ipam

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// LockFile is the name of the lock file beside the store.
const LockFile = "ipam.lock"

// lock takes an exclusive flock on path, waiting at most timeout.
//
// bbolt's own file lock polls every 50 ms, which with 16 pods starting at
// once put whole polling periods into the tail latency of ADD. A blocking
// flock is woken by the kernel the moment the holder lets go. The wait runs
// in a goroutine so that it can time out; if it does, the goroutine closes
// the file as soon as the lock arrives, so a timed-out waiter never keeps it.
func lock(path string, timeout time.Duration) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
		return f, nil // uncontended: no goroutine, no timer
	}
	done := make(chan error, 1)
	go func() {
		for {
			err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
			if err != unix.EINTR {
				done <- err
				return
			}
		}
	}()
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case err := <-done:
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		return f, nil
	case <-t.C:
		go func() { <-done; f.Close() }()
		return nil, fmt.Errorf("%w: %s held by another process for more than %s", ErrLocked, path, timeout)
	}
}
