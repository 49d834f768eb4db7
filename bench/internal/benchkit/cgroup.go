package benchkit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// MemCgroup is a memory cgroup made for one server child, with a hard
// limit: the box the "RSS ≤ 200 MB" describes. Under it the kernel
// reclaims the gateway's clean file pages (Badger's memory-mapped value
// log and tables, written and msynced) and only anonymous memory (heap,
// stacks) is really bounded; over the limit the child is OOM-killed.
type MemCgroup struct {
	dir string
	v2  bool
}

// ErrNoCgroup means no writable memory cgroup is available here (not root,
// no memory controller): the constrained run is reported as not measured.
var ErrNoCgroup = errors.New("no writable memory cgroup")

// NewMemCgroup creates a child of this process's memory cgroup (cgroup v2
// or v1) limited to limitBytes, swap included.
func NewMemCgroup(name string, limitBytes int64) (*MemCgroup, error) {
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoCgroup, err)
	}
	var cg MemCgroup
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case slices.Contains(strings.Split(f[1], ","), "memory"):
			cg = MemCgroup{dir: filepath.Join("/sys/fs/cgroup/memory", f[2], name)}
		case f[0] == "0" && f[1] == "" && cg.dir == "":
			base := "/sys/fs/cgroup"
			if _, err := os.Stat(filepath.Join(base, "cgroup.controllers")); err != nil {
				base = "/sys/fs/cgroup/unified"
			}
			ctl, err := os.ReadFile(filepath.Join(base, f[2], "cgroup.subtree_control"))
			if err == nil && slices.Contains(strings.Fields(string(ctl)), "memory") {
				cg = MemCgroup{dir: filepath.Join(base, f[2], name), v2: true}
			}
		}
	}
	if cg.dir == "" {
		return nil, fmt.Errorf("%w: no memory controller in /proc/self/cgroup", ErrNoCgroup)
	}
	if err := os.Mkdir(cg.dir, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoCgroup, err)
	}
	limit := strconv.FormatInt(limitBytes, 10)
	files := []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"}
	if cg.v2 {
		files = []string{"memory.max", "memory.swap.max"}
	}
	if err := cg.write(files[0], limit); err != nil {
		cg.Remove()
		return nil, fmt.Errorf("%w: %v", ErrNoCgroup, err)
	}
	swap := limit
	if cg.v2 {
		swap = "0"
	}
	_ = cg.write(files[1], swap) // absent without swap accounting: no swap then
	return &cg, nil
}

func (c *MemCgroup) write(file, value string) error {
	return os.WriteFile(filepath.Join(c.dir, file), []byte(value), 0o644)
}

func (c *MemCgroup) read(file string) string {
	b, _ := os.ReadFile(filepath.Join(c.dir, file))
	return strings.TrimSpace(string(b))
}

// procsFile is the file a process writes its pid to in order to join.
func (c *MemCgroup) procsFile() string { return filepath.Join(c.dir, "cgroup.procs") }

// CgroupStats is what the cgroup saw of its process.
type CgroupStats struct {
	LimitMB float64 `json:"limit_mb"`
	// PeakMB is the cgroup's peak charge: anonymous memory plus page
	// cache (Badger's files), the figure the limit holds down.
	PeakMB float64 `json:"peak_mb"`
	// LimitHits is the kernel's own count of limit events (v1
	// memory.failcnt, v2 memory.events "max"); page cache reclaimed on the
	// way to the limit does not always count, so read it with PeakMB.
	LimitHits int64 `json:"limit_hits"`
	OOMKills  int64 `json:"oom_kills"`
}

func (c *MemCgroup) Stats() CgroupStats {
	var s CgroupStats
	mb := func(v string) float64 { n, _ := strconv.ParseFloat(v, 64); return n / (1 << 20) }
	events := func(file string) map[string]int64 {
		out := map[string]int64{}
		for _, line := range strings.Split(c.read(file), "\n") {
			if k, v, ok := strings.Cut(line, " "); ok {
				out[k], _ = strconv.ParseInt(v, 10, 64)
			}
		}
		return out
	}
	if c.v2 {
		s.LimitMB, s.PeakMB = mb(c.read("memory.max")), mb(c.read("memory.peak"))
		ev := events("memory.events")
		s.LimitHits, s.OOMKills = ev["max"], ev["oom_kill"]
		return s
	}
	s.LimitMB, s.PeakMB = mb(c.read("memory.limit_in_bytes")), mb(c.read("memory.max_usage_in_bytes"))
	s.LimitHits, _ = strconv.ParseInt(c.read("memory.failcnt"), 10, 64)
	s.OOMKills = events("memory.oom_control")["oom_kill"]
	return s
}

// Remove deletes the cgroup once its processes are gone.
func (c *MemCgroup) Remove() { _ = os.Remove(c.dir) }
