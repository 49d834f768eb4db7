package store

import "github.com/edgeanchor/edgeanchor/gateway/store/diskfloor"

// ErrDiskFull means that the free space of the record store's file system is below
// store.min_free_mb, so the store refuses writes before the disk fills
// (Badger writes through memory maps: a full disk would kill the process
// with SIGBUS). Nothing was stored; the device keeps the reading and sends
// it again. Writes resume by themselves once space is freed.
var ErrDiskFull = diskfloor.ErrBelowFloor
