// Package badgerfile reads and changes the files of a Badger database that
// is not open: it finds the table files that would make Badger panic at
// open, compares value log sizes across an open, reads value log entries
// directly, drops a table from the MANIFEST, checks the directory lock and
// copies the directory. It knows nothing of what the database holds
// (package gateway/store uses it to name damage and to repair).
package badgerfile

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2/z"
	"google.golang.org/protobuf/proto"
)

// BadTable is a table file that cannot be read.
type BadTable struct {
	Path string
	Err  string // what Badger said (a panic is turned into its text)
}

// BadTables opens every table file listed in the MANIFEST of the database
// in dir, as Badger does at open, and returns the damaged ones. Badger opens
// its tables in goroutines of its own, where a cut table panics (slice
// bounds) and kills the process; here the same read runs under recover.
// Without a readable MANIFEST it checks nothing: Badger's open then says
// what is wrong with it.
func BadTables(dir string, opts badger.Options) ([]BadTable, error) {
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
	var bad []BadTable
	for _, id := range ids {
		p := table.NewFilename(id, dir)
		if err := checkTable(p, mf.Tables[id].Compression, opts.BlockSize); err != nil {
			bad = append(bad, BadTable{Path: p, Err: err.Error()})
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

// VlogSizes returns the size of every value log file in dir.
func VlogSizes(dir string) map[string]int64 {
	out := map[string]int64{}
	paths, _ := filepath.Glob(filepath.Join(dir, "*.vlog"))
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil {
			out[p] = st.Size()
		}
	}
	return out
}

// CutVlogs compares value log sizes before and after Badger's open, which
// cuts the newest value log back to its last complete entry: it returns
// the files it shortened, with how much, for an error message. (After a
// kill -9 the newest file is also cut, to its written part: that alone
// is no damage; records whose values were there are.)
func CutVlogs(before, after map[string]int64) string {
	var parts []string
	for p, n := range before {
		if m, ok := after[p]; ok && m < n {
			parts = append(parts, fmt.Sprintf("%s (cut from %d to %d bytes at open)", p, n, m))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// ScanValueLogs reads every value log in dir directly (entry by entry,
// each checked against its CRC, stopping at the first bad one of a file)
// and calls fn with each live entry's key, value and version, in file
// name order. A value above the value threshold is in the value log with
// its key, so it is still found here when its key was lost with a table.
// fn must copy val to keep it.
func ScanValueLogs(dir string, fn func(key, val []byte, version uint64)) error {
	paths, err := filepath.Glob(filepath.Join(dir, "*.vlog"))
	if err != nil {
		return err
	}
	sort.Strings(paths)
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		const vlogHeader = 20 // Badger's value log file header
		for off := vlogHeader; off+2 < len(data); {
			h := data[off:]
			meta, i := h[0], 2
			var f [3]uint64
			ok := true
			for j := range f {
				v, n := binary.Uvarint(h[i:])
				if n <= 0 {
					ok = false
					break
				}
				f[j], i = v, i+n
			}
			klen, vlen := f[0], f[1]
			if !ok || klen < 8 || klen > 1<<16 || vlen > 1<<30 || uint64(len(h)-i) < klen+vlen+4 {
				break
			}
			end := i + int(klen+vlen)
			if crc32.Checksum(h[:end], y.CastagnoliCrcTable) != binary.BigEndian.Uint32(h[end:end+4]) {
				break
			}
			off += end + 4
			key := h[i : i+int(klen)-8]
			version := math.MaxUint64 - binary.BigEndian.Uint64(h[i+int(klen)-8:i+int(klen)])
			if meta&1 != 0 {
				continue
			}
			fn(key, h[i+int(klen):end], version)
		}
	}
	return nil
}

// DropTable removes a table from the database in dir: a DELETE change appended to
// the MANIFEST (Badger's own format: length, CRC32-C, the change set),
// then the file.
func DropTable(dir, path string) error {
	id, ok := table.ParseFileID(filepath.Base(path))
	if !ok {
		return fmt.Errorf("%s is not a table file name", path)
	}
	buf, err := proto.Marshal(&pb.ManifestChangeSet{Changes: []*pb.ManifestChange{{Id: id, Op: pb.ManifestChange_DELETE}}})
	if err != nil {
		return err
	}
	var hdr [8]byte
	binary.BigEndian.PutUint32(hdr[0:4], uint32(len(buf)))
	binary.BigEndian.PutUint32(hdr[4:8], crc32.Checksum(buf, y.CastagnoliCrcTable))
	f, err := os.OpenFile(filepath.Join(dir, badger.ManifestFilename), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(hdr[:], buf...)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Remove(path)
}

// CheckUnlocked fails when a process (a running gateway) holds the
// database's Badger directory lock (flock on the directory itself).
func CheckUnlocked(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return fmt.Errorf("gateway: repair: %s is in use (stop the gateway first): %w", dir, err)
	}
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}

// CopyDir copies the regular files of src into a new directory dst.
func CopyDir(src, dst string) error {
	if err := os.Mkdir(dst, 0o700); err != nil {
		return err
	}
	ents, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		if err := copyFile(filepath.Join(src, e.Name()), filepath.Join(dst, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
