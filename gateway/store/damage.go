package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/ristretto/v2/z"
)

// ErrDamaged means that a file of the record store is damaged (cut short or
// overwritten), so the store cannot be opened as it is. The error names
// the file or the record. Stop the gateway, copy the store aside, and run
// `edgeanchor gateway repair` (docs/operations.md, "A damaged record
// store"): it keeps every intact record and lists the gseqs it lost.
var ErrDamaged = errors.New("gateway: record store damaged")

// DamagedTableError names a Badger table file that cannot be read.
type DamagedTableError struct {
	Path string
	Err  string // what Badger said (a panic is turned into its text)
}

func (e *DamagedTableError) Error() string {
	return fmt.Sprintf("%v: table file %s cannot be read (%s)", ErrDamaged, e.Path, e.Err)
}

func (e *DamagedTableError) Unwrap() error { return ErrDamaged }

// checkTables opens every table file listed in the store's MANIFEST (in
// dir), as Badger does at open, and returns the damaged ones. Badger opens
// its tables in goroutines of its own, where a cut table panics (slice
// bounds) and kills the process; here the same read runs under recover.
// Without a readable MANIFEST it checks nothing: Badger's open then says
// what is wrong with it.
func checkTables(dir string, opts badger.Options) ([]*DamagedTableError, error) {
	f, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	mf, _, err := badger.ReplayManifestFile(f, opts.ExternalMagicVersion, opts)
	_ = f.Close()
	if err != nil {
		return nil, nil
	}
	ids := make([]uint64, 0, len(mf.Tables))
	for id := range mf.Tables {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	var bad []*DamagedTableError
	for _, id := range ids {
		p := table.NewFilename(id, dir)
		if err := checkTable(p, mf.Tables[id].Compression, opts.BlockSize); err != nil {
			bad = append(bad, &DamagedTableError{Path: p, Err: err.Error()})
		}
	}
	return bad, nil
}

func checkTable(path string, comp options.CompressionType, blockSize int) (err error) {
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil && !errors.Is(err, z.NewFile) {
		return err
	}
	closed := false
	defer func() {
		if r := recover(); r != nil {
			err = errors.New("its index does not decode: the file is cut short or overwritten")
		}
		if !closed && mf != nil {
			_ = mf.Close(-1)
		}
	}()
	if len(mf.Data) < 8 {
		return fmt.Errorf("only %d bytes", len(mf.Data))
	}
	t, err := table.OpenTable(mf, table.Options{BlockSize: blockSize, Compression: comp, ChkMode: options.NoVerification})
	if err != nil {
		return err
	}
	closed = true
	return t.MmapFile.Close(-1)
}

// vlogSizes returns the size of every value log file in dir.
func vlogSizes(dir string) map[string]int64 {
	out := map[string]int64{}
	paths, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil {
			out[p] = st.Size()
		}
	}
	return out
}

// cutVlogs compares value log sizes before and after Badger's open, which
// cuts the newest value log back to its last complete entry: it returns
// the files it shortened, with how much, for an error message. (After a
// kill -9 the newest file is also cut, to its written part: that alone
// is no damage; records whose values were there are.)
func cutVlogs(before, after map[string]int64) string {
	var parts []string
	for p, n := range before {
		if m, ok := after[p]; ok && m < n {
			parts = append(parts, fmt.Sprintf("%s (cut from %d to %d bytes at open)", p, n, m))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// openBadger is badger.Open with a panic in its own goroutine turned into
// an ErrDamaged error naming the directory.
func openBadger(opts badger.Options) (db *badger.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg := strings.TrimSpace(strings.SplitN(fmt.Sprint(r), "\n", 2)[0])
			db, err = nil, fmt.Errorf("%w: %s: Badger failed to open it: %s", ErrDamaged, opts.Dir, msg)
		}
	}()
	return badger.Open(opts)
}

// damagedTablesError joins the damaged tables into one error.
func damagedTablesError(dir string, bad []*DamagedTableError) error {
	if len(bad) == 1 {
		return bad[0]
	}
	names := make([]string, len(bad))
	for i, b := range bad {
		names[i] = b.Path + " (" + b.Err + ")"
	}
	return fmt.Errorf("%w: %s: %d table files cannot be read: %s", ErrDamaged, dir, len(bad), strings.Join(names, "; "))
}

// checkTail reads what was written last, which a cut value log loses
// first: the newest record, then the claims' newest writes (RecordClaims;
// the batch log's: the batches from the newest anchored one on, as an
// anchor receipt rewrites its batch). Badger answers an unreadable
// value with an empty one (it only logs the read error), so without this
// check the damage surfaced later as "unexpected end of JSON input".
func (s *Store) checkTail(dir, cut string) error {
	damaged := func(what string, err error) error {
		msg := fmt.Sprintf("%v: %s: %s unreadable (%s)", ErrDamaged, dir, what,
			strings.TrimPrefix(err.Error(), "gateway: "))
		if cut != "" {
			msg += "; value log " + cut
		}
		return &storeDamagedError{msg: msg}
	}
	if last := s.lastG.Load(); last > 0 {
		if _, err := s.Get(last); err != nil {
			return damaged(fmt.Sprintf("newest record gseq %d", last), err)
		}
	}
	if s.claims != nil {
		if what, err := s.claims.CheckTail(s.db); err != nil {
			return damaged(what, err)
		}
	}
	return nil
}

type storeDamagedError struct{ msg string }

func (e *storeDamagedError) Error() string { return e.msg }
func (e *storeDamagedError) Unwrap() error { return ErrDamaged }
