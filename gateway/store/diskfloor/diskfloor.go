// Package diskfloor keeps a file system's free space above a floor for a
// writer that must stop before the disk fills: it measures with statfs in
// the background and after every few MiB written, and says whether writes
// must be refused (the record store's store.min_free_mb).
package diskfloor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// ErrBelowFloor means that the free space is below the floor; the record
// store answers it as store.ErrDiskFull.
var ErrBelowFloor = errors.New("gateway: record store disk below its free-space floor")

// diskRefresh is how often the background loop measures free space; the
// writer also measures after every diskStep bytes it writes, so a burst
// cannot run far past the floor between two ticks.
const (
	diskRefresh = time.Second
	diskStep    = 4 << 20
)

// Guard keeps the free space of the store's file system, measured with
// statfs in the background and every diskStep bytes written (never per
// message), and says whether writes must be refused. Below floor it
// refuses; it accepts again at floor plus a margin (floor/8, at least
// 1 MiB), so that it does not flap at the edge.
type Guard struct {
	dir string
	log *slog.Logger
	// metrics (nil: not exported)
	low   interface{ Set(float64) }
	floor atomic.Int64 // bytes; 0: off

	mu      sync.Mutex // serialises measure
	free    atomic.Int64
	refused atomic.Bool
	written atomic.Int64 // bytes since the last measure
	statErr atomic.Pointer[error]
}

// New returns the guard of dir's file system with floor bytes (0: off),
// measured once; low (nil: none) is set to 1 while writes are refused.
func New(dir string, floor int64, log *slog.Logger, low interface{ Set(float64) }) *Guard {
	d := &Guard{dir: dir, log: log, low: low}
	d.floor.Store(floor)
	d.Measure()
	return d
}

// SetFloor changes the floor (bytes, 0: off) and measures at once.
func (d *Guard) SetFloor(floor int64) {
	d.floor.Store(floor)
	d.Measure()
}

// Measure reads the free space and updates the refusing state.
func (d *Guard) Measure() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.written.Store(0)
	var st syscall.Statfs_t
	if err := syscall.Statfs(d.dir, &st); err != nil {
		// Cannot tell: keep the last state, say so once.
		err = fmt.Errorf("statfs %s: %w", d.dir, err)
		if d.statErr.Swap(&err) == nil {
			d.log.Warn("record store: cannot measure free disk space", "error", err)
		}
		return
	}
	d.statErr.Store(nil)
	free := int64(st.Bavail) * int64(st.Bsize)
	d.free.Store(free)
	floor := d.floor.Load()
	was := d.refused.Load()
	now := was
	switch {
	case floor <= 0:
		now = false
	case !was && free < floor:
		now = true
	case was && free >= floor+max(floor/8, 1<<20):
		now = false
	}
	if now == was {
		return
	}
	d.refused.Store(now)
	if d.low != nil {
		d.low.Set(map[bool]float64{true: 1, false: 0}[now])
	}
	if now {
		d.log.Error("record store: free disk space below store.min_free_mb; refusing writes until space is freed",
			"dir", d.dir, "free_mib", free>>20, "min_free_mib", floor>>20)
	} else {
		d.log.Warn("record store: free disk space back above store.min_free_mb; accepting writes again",
			"dir", d.dir, "free_mib", free>>20, "min_free_mib", floor>>20)
	}
}

// Err returns an ErrBelowFloor error while writes must be refused, else nil.
func (d *Guard) Err() error {
	if !d.refused.Load() {
		return nil
	}
	return fmt.Errorf("%w: %d MiB free on the file system of %s, store.min_free_mb is %d",
		ErrBelowFloor, d.free.Load()>>20, d.dir, d.floor.Load()>>20)
}

// Wrote accounts n bytes about to be written and measures again once
// diskStep bytes have gone by since the last measure.
func (d *Guard) Wrote(n int64) {
	if d.written.Add(n) >= diskStep {
		d.Measure()
	}
}

// Run measures every diskRefresh until ctx ends.
func (d *Guard) Run(ctx context.Context) {
	t := time.NewTicker(diskRefresh)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.Measure()
		}
	}
}

// DirSize returns the bytes of the regular files under dir.
func DirSize(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if info, err := d.Info(); err == nil {
			n += info.Size()
		}
		return nil
	})
	return n
}

// Free returns the bytes of dir's file system that the gateway may
// still fill (free to unprivileged users); 0 when it cannot tell.
func Free(dir string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0
	}
	return int64(st.Bavail) * int64(st.Bsize)
}
