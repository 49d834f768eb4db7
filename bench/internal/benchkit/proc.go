package benchkit

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ProcStats is a process's CPU seconds (user+system) and its current and
// peak RSS from /proc.
type ProcStats struct {
	CPUSeconds float64 `json:"cpu_seconds"`
	RSSMB      float64 `json:"rss_mb"`
	PeakRSSMB  float64 `json:"peak_rss_mb"`
	// RSS split: anonymous memory (heap, stacks) and file-backed pages
	// (Badger's memory-mapped value log and tables).
	RSSAnonMB float64 `json:"rss_anon_mb"`
	RSSFileMB float64 `json:"rss_file_mb"`
}

// ReadProc reads a process's CPU seconds (user+system) and its current and
// peak RSS from /proc.
func ReadProc(pid int) (ProcStats, error) {
	var ps ProcStats
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ps, err
	}
	// Fields after the ")" that ends the command name: utime is field 14,
	// stime 15 (1-based), i.e. index 11 and 12 after the state field.
	s := string(stat)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return ps, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	ps.CPUSeconds = (ut + st) / 100 // USER_HZ is 100 on Linux
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ps, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		switch k {
		case "VmRSS":
			ps.RSSMB = kb / 1024
		case "VmHWM":
			ps.PeakRSSMB = kb / 1024
		case "RssAnon":
			ps.RSSAnonMB = kb / 1024
		case "RssFile":
			ps.RSSFileMB = kb / 1024
		}
	}
	return ps, nil
}

// IdleSeconds is the machine's idle CPU time so far, all CPUs together
// (/proc/stat: idle + iowait, in USER_HZ).
func IdleSeconds() float64 {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0
	}
	idle, _ := strconv.ParseFloat(f[4], 64)
	iowait, _ := strconv.ParseFloat(f[5], 64)
	return (idle + iowait) / 100
}

// Loadavg is /proc/loadavg.
func Loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}
