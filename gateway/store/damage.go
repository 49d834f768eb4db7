package store

import (
	"errors"
	"fmt"
	"strings"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/gateway/store/badgerfile"
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

// checkTables is badgerfile.BadTables as DamagedTableErrors.
func checkTables(dir string, opts badger.Options) ([]*DamagedTableError, error) {
	bad, err := badgerfile.BadTables(dir, opts)
	out := make([]*DamagedTableError, len(bad))
	for i, b := range bad {
		out[i] = &DamagedTableError{Path: b.Path, Err: b.Err}
	}
	return out, err
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
