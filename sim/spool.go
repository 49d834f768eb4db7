package sim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// DefaultSpoolMax is how many signed readings a device keeps while it cannot
// reach its gateway (a day of one-minute readings and then some).
const DefaultSpoolMax = 2000

// ErrSpoolEmpty is returned by Spool.Get for a sequence number the spool
// does not hold (it was sent and deleted, or dropped when the spool was
// full).
var ErrSpoolEmpty = errors.New("sim: reading not in spool")

// Spool is a device's on-disk store-and-forward queue of signed envelopes,
// keyed by sequence number: one file per reading, written to a temporary
// name, synced and renamed, so a crash leaves either the whole reading or
// none of it. Readings are deleted only after the gateway acknowledged
// them. When the spool holds Max readings, adding one drops the oldest and
// counts it in Dropped (kept on disk across restarts).
type Spool struct {
	dir string
	max int

	mu      sync.Mutex
	seqs    []uint64 // held, ascending
	dropped uint64
}

const droppedFile = "dropped"

// OpenSpool opens (creating if needed) the spool in dir holding at most max
// readings (max <= 0 means DefaultSpoolMax). Leftover temporary files from a
// crash are removed.
func OpenSpool(dir string, max int) (*Spool, error) {
	if max <= 0 {
		max = DefaultSpoolMax
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("sim: spool: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("sim: spool: %w", err)
	}
	s := &Spool{dir: dir, max: max}
	for _, e := range ents {
		name := e.Name()
		switch {
		case strings.HasSuffix(name, ".tmp"):
			os.Remove(filepath.Join(dir, name))
		case strings.HasSuffix(name, ".env"):
			seq, err := strconv.ParseUint(strings.TrimSuffix(name, ".env"), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("sim: spool %s: unexpected file %q", dir, name)
			}
			s.seqs = append(s.seqs, seq)
		}
	}
	slices.Sort(s.seqs)
	if b, err := os.ReadFile(filepath.Join(dir, droppedFile)); err == nil {
		s.dropped, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	}
	return s, nil
}

func (s *Spool) path(seq uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d.env", seq))
}

// Put stores the envelope of reading seq durably. seq must be greater than
// every sequence number put before. It returns how many readings were
// dropped to make room (0 or more).
func (s *Spool) Put(seq uint64, env []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if n := len(s.seqs); n > 0 && seq <= s.seqs[n-1] {
		return 0, fmt.Errorf("sim: spool: seq %d not after %d", seq, s.seqs[n-1])
	}
	if err := writeFileSync(s.path(seq), env, 0o600); err != nil {
		return 0, err
	}
	s.seqs = append(s.seqs, seq)
	dropped := 0
	for len(s.seqs) > s.max {
		if err := os.Remove(s.path(s.seqs[0])); err != nil && !os.IsNotExist(err) {
			return dropped, fmt.Errorf("sim: spool drop: %w", err)
		}
		s.seqs = s.seqs[1:]
		dropped++
	}
	if dropped > 0 {
		s.dropped += uint64(dropped)
		if err := writeFileSync(filepath.Join(s.dir, droppedFile), []byte(strconv.FormatUint(s.dropped, 10)+"\n"), 0o600); err != nil {
			return dropped, err
		}
	}
	return dropped, nil
}

// Pending returns up to n held sequence numbers greater than after, in order.
func (s *Spool) Pending(after uint64, n int) []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearch(s.seqs, after+1)
	end := min(len(s.seqs), i+n)
	return slices.Clone(s.seqs[i:end])
}

// Get reads the envelope of reading seq.
func (s *Spool) Get(seq uint64) ([]byte, error) {
	b, err := os.ReadFile(s.path(seq))
	if os.IsNotExist(err) {
		return nil, fmt.Errorf("%w: seq %d", ErrSpoolEmpty, seq)
	}
	if err != nil {
		return nil, fmt.Errorf("sim: spool: %w", err)
	}
	return b, nil
}

// Delete removes reading seq after the gateway acknowledged it. Deleting a
// reading the spool no longer holds is not an error.
func (s *Spool) Delete(seq uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := slices.BinarySearch(s.seqs, seq)
	if !ok {
		return nil
	}
	if err := os.Remove(s.path(seq)); err != nil && !os.IsNotExist(err) {
		return fmt.Errorf("sim: spool delete: %w", err)
	}
	s.seqs = slices.Delete(s.seqs, i, i+1)
	return nil
}

// Len is how many readings wait in the spool.
func (s *Spool) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.seqs)
}

// Last is the highest sequence number held, or 0.
func (s *Spool) Last() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seqs) == 0 {
		return 0
	}
	return s.seqs[len(s.seqs)-1]
}

// Dropped is how many readings were dropped because the spool was full,
// over the spool's whole life.
func (s *Spool) Dropped() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dropped
}

// writeFileSync writes data to path atomically and durably: a temporary
// file, fsync, rename, fsync of the directory.
func writeFileSync(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("sim: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sim: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sim: sync dir: %w", err)
	}
	return nil
}
