package store

import "time"

// Config sizes Badger's memory and sets the write path's limits (the
// gateway's store.* keys). The defaults keep the gateway under ~200 MB RSS
// with 1,000 devices under load.
type Config struct {
	MemTableMB      int `yaml:"memtable_mb"`
	BlockCacheMB    int `yaml:"block_cache_mb"`
	IndexCacheMB    int `yaml:"index_cache_mb"`
	ValueLogFileMB  int `yaml:"value_log_file_mb"`
	MaxGroupRecords int `yaml:"max_group_records"`
	// GroupLinger: when records arrive together (the store is busy), the
	// writer waits up to this long for more before it commits the group.
	// Each group commit costs the same fixed CPU (fsyncs, one receipt
	// signature, Badger's transaction), so fuller groups leave more CPU for
	// verification; a lone record is committed at once. 0 commits at once.
	GroupLinger time.Duration `yaml:"group_linger"`
	// MinFreeMB is the free-space floor of the store's file system: below
	// it the store refuses writes (refusal disk_full, /readyz 503) before
	// the disk fills, and accepts again once space is freed. 0 turns the
	// check off (a full disk then kills the process: Badger writes through
	// memory maps).
	MinFreeMB int `yaml:"min_free_mb"`
	// MaxOpenGaps bounds the open sequence gaps kept per device, the seqs
	// a late fill may still store (docs/protocol.md); past it the lowest
	// gap is closed for good.
	MaxOpenGaps int `yaml:"max_open_gaps"`
}

// DefaultGroupLinger is store.group_linger's default: at 10,000 msgs/s it
// makes groups of ~60 records instead of ~17 and raised the gateway's
// throughput by a third in bench/ingest, for at most 5 ms more latency.
const DefaultGroupLinger = 5 * time.Millisecond

// DefaultMinFreeMB is store.min_free_mb's default: room for the value log
// file being written (value_log_file_mb, 32), memtable flushes and a few
// compactions, with margin for a burst between two measures.
const DefaultMinFreeMB = 256

// DefaultConfig returns the store's part of the gateway's default
// configuration.
func DefaultConfig() Config {
	return Config{
		MemTableMB:      8,
		BlockCacheMB:    8,
		IndexCacheMB:    8,
		ValueLogFileMB:  32,
		MaxGroupRecords: 1024,
		GroupLinger:     DefaultGroupLinger,
		MinFreeMB:       DefaultMinFreeMB,
		MaxOpenGaps:     DefaultMaxOpenGaps,
	}
}
