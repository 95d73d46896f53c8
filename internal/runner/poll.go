package runner

import (
	"context"
	"fmt"
	"os"
	"time"
)

// Poll calls fingerprint every interval and pokes when it changed. Polling
// a directory listing and a few stats costs next to nothing and needs no
// inotify limits raised on busy nodes.
func Poll(ctx context.Context, interval time.Duration, fingerprint func() string, poke func()) {
	last := fingerprint()
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
		if fp := fingerprint(); fp != last {
			last = fp
			poke()
		}
	}
}

// Stamp is a file's size and modification time: it changes when the file
// is written.
func Stamp(fi os.FileInfo) string { return fmt.Sprint(fi.Size(), fi.ModTime().UnixNano()) }

// FileStamp is a fingerprint for Poll: the Stamp of the file at path, or
// "missing".
func FileStamp(path string) func() string {
	return func() string {
		fi, err := os.Stat(path)
		if err != nil {
			return "missing"
		}
		return Stamp(fi)
	}
}
