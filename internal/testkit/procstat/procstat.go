// Package procstat reads a process's resource use from /proc, for
// benchmarks that report it.
package procstat

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// PeakRSS is the process's peak resident memory (VmHWM) in kB, 0 when it
// cannot be read.
func PeakRSS(pid int) int { return status(pid, "VmHWM") }

// FileRSS is the part of the process's resident memory that maps files
// (RssFile, in kB): for a Go daemon, its own binary's code and data.
func FileRSS(pid int) int { return status(pid, "RssFile") }

// status reads one kB field of /proc/PID/status; 0 when it cannot.
func status(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return kb
		}
	}
	return 0
}

// CPUSeconds is the process's user and system CPU time so far.
func CPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseFloat(f[11], 64)
	stime, _ := strconv.ParseFloat(f[12], 64)
	return (utime + stime) / 100 // USER_HZ
}
