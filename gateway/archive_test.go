package gateway

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/archive"
	"github.com/edgeanchor/edgeanchor/gateway/batch"
	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
	"github.com/edgeanchor/edgeanchor/gateway/store"
	"github.com/edgeanchor/edgeanchor/gateway/store/badgerfile"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// archiveSite is a stopped gateway's store with two anchored phases of
// records: the first phase's batches all end before Cutoff.
type archiveSite struct {
	e         *anEnv
	records   string // the stopped gateway's record store
	cutoff    time.Time
	before    uint64 // records stored before the cutoff
	total     uint64
	trust     *evidence.Trust
	trustPath string
	pub       []byte
	bundles   map[uint64][]byte // served by the gateway before archiving
	devSeqOf  map[uint64][2]any // gseq → did, seq
}

func newArchiveSite(t *testing.T) *archiveSite {
	t.Helper()
	e := anStart(t, 2, 100*time.Millisecond, 0)
	s := &archiveSite{e: e, bundles: map[uint64][]byte{}, devSeqOf: map[uint64][2]any{}}
	for round := range 4 {
		for _, d := range e.devs {
			if err := e.publish(d); err != nil {
				t.Fatal(err)
			}
		}
		if round == 1 { // at least two batches before the cutoff
			e.waitAnchored(30 * time.Second)
		}
	}
	e.waitAnchored(30 * time.Second)
	s.before = e.g.Store().LastGSeq()
	// The cutoff lies after every batch of the first phase (their window
	// ends at their last record's receive time).
	s.cutoff = time.Now()
	testutil.WaitUntil(t, 5*time.Second, "clock past the cutoff", func() bool { return time.Since(s.cutoff) > 5*time.Millisecond })
	for range 3 {
		for _, d := range e.devs {
			if err := e.publish(d); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.waitAnchored(30 * time.Second)
	s.total = e.g.Store().LastGSeq()
	for g := uint64(1); g <= s.total; g++ {
		code, body := e.get(fmt.Sprintf("/v1/records/%d/proof", g))
		if code != http.StatusOK {
			t.Fatalf("proof of %d before archiving: %d %s", g, code, body)
		}
		s.bundles[g] = body
		rec, err := e.g.Store().Get(g)
		if err != nil {
			t.Fatal(err)
		}
		s.devSeqOf[g] = [2]any{rec.DID, rec.Seq}
	}
	s.records = filepath.Join(e.g.Config().DataDir, "records")
	e.stop()
	s.trust = e.trust()
	s.trustPath = filepath.Join(t.TempDir(), "trust.json")
	if err := evidence.WriteTrustFile(s.trustPath, s.trust); err != nil {
		t.Fatal(err)
	}
	der, err := device.MarshalPublicKeyDER(e.lgw.Signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	s.pub = der
	return s
}

func (s *archiveSite) options(out string) archive.Options {
	return archive.Options{Before: s.cutoff, Out: out, Ledger: s.e.client, GatewayPub: s.pub, Trust: s.trust, Workers: 2, Logger: slog.New(slog.DiscardHandler)}
}

// copyStore copies the site's stopped store to a fresh directory.
func (s *archiveSite) copyStore(t *testing.T) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "records")
	if err := badgerfile.CopyDir(s.records, dst); err != nil {
		t.Fatal(err)
	}
	return dst
}

func openArchivedStore(t *testing.T, dir string, signer device.Signer, log *testutil.SyncBuffer) *store.Store {
	t.Helper()
	st, err := store.Open(dir, store.Options{Signer: signer, Claims: batch.Claims(), Logger: slog.New(slog.NewTextHandler(log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st
}

func TestArchive(t *testing.T) {
	s := newArchiveSite(t)
	if s.before == 0 || s.total <= s.before {
		t.Fatalf("site: %d records before the cutoff of %d", s.before, s.total)
	}

	t.Run("ArchiveProofsAndStore", func(t *testing.T) {
		dir := s.copyStore(t)
		out := filepath.Join(t.TempDir(), "2026-01.ea")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		info, err := archive.Create(ctx, dir, s.options(out))
		if err != nil {
			t.Fatal(err)
		}
		// Whole batches before the cutoff, never the newest anchored one.
		if info.FirstGSeq != 1 || info.LastGSeq == 0 || info.LastGSeq > s.before || info.Records != info.LastGSeq || info.Name != "2026-01.ea" {
			t.Fatalf("archive %+v, want gseq 1..at most %d", info, s.before)
		}
		// Every archived record's bundle comes from the archive alone,
		// byte for byte the one the gateway served, and verifies.
		for g := uint64(1); g <= info.LastGSeq; g++ {
			b, err := archive.Bundle(out, g)
			if err != nil {
				t.Fatalf("archive bundle %d: %v", g, err)
			}
			if _, err := b.Verify(s.trust, nil); err != nil {
				t.Fatalf("archive bundle %d: %v", g, err)
			}
			enc, err := b.Encode()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(enc, s.bundles[g]) {
				t.Fatalf("archive bundle %d differs from the one served before archiving:\n%s\n%s", g, enc, s.bundles[g])
			}
			ds := s.devSeqOf[g]
			bd, err := archive.DeviceBundle(out, ds[0].(device.DID), ds[1].(uint64))
			if err != nil || bd.Record.GSeq != g {
				t.Fatalf("archive bundle of %v: %v %v", ds, bd, err)
			}
		}
		if _, err := archive.Bundle(out, info.LastGSeq+1); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("bundle of a record not archived: %v, want ErrNotFound", err)
		}

		// The store: archived records gone, the rest served, no hole
		// reported, new records continue the gseq.
		var log testutil.SyncBuffer
		st := openArchivedStore(t, dir, s.e.lgw.Signer, &log)
		if st.LastGSeq() != s.total || st.ArchivedThrough() != info.LastGSeq {
			t.Fatalf("store last %d archived through %d, want %d and %d", st.LastGSeq(), st.ArchivedThrough(), s.total, info.LastGSeq)
		}
		if strings.Contains(log.String(), "hole") {
			t.Fatalf("store reports a hole after archiving:\n%s", log.String())
		}
		for g := uint64(1); g <= s.total; g++ {
			_, err := st.Get(g)
			if archived := g <= info.LastGSeq; archived != errors.Is(err, store.ErrNotFound) {
				t.Fatalf("record %d: %v (archived: %v)", g, err, archived)
			}
		}
		blog := batch.StoreLog(st.DB())
		if _, err := blog.Get(info.LastBatch); !errors.Is(err, batch.ErrNotFound) {
			t.Fatalf("archived batch %d still stored: %v", info.LastBatch, err)
		}
		if sb, err := blog.Get(info.LastBatch + 1); err != nil || sb.First != info.LastGSeq+1 {
			t.Fatalf("first batch kept: %v %v", sb, err)
		}
		if sb, _ := blog.Get(info.LastBatch + 1); sb != nil {
			if _, ok, err := blog.Tree(sb); !ok || err != nil {
				t.Fatalf("first batch kept %v lost its kept leaf hashes: %v %v", sb, ok, err)
			}
		}
		if err := st.DB().View(func(txn *badger.Txn) error {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: []byte("b/v/")})
			defer it.Close()
			for it.Rewind(); it.Valid(); it.Next() {
				if seq := binary.BigEndian.Uint64(it.Item().Key()[4:]); seq <= info.LastBatch {
					return fmt.Errorf("the leaf hashes of archived batch %d are still stored", seq)
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		proofs, err := batch.NewProofs(st, blog, s.e.client, s.e.lgw.Signer, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		api := httpapi.NewProofAPI(st, blog, proofs, slog.New(slog.DiscardHandler))
		mux := http.NewServeMux()
		api.Routes(mux)
		get := func(path string) (int, []byte) {
			rr := httptest.NewRecorder()
			mux.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, path, nil))
			return rr.Code, rr.Body.Bytes()
		}
		code, body := get("/v1/records/1/proof")
		var ans httpapi.ArchivedAnswer
		if code != http.StatusGone || json.Unmarshal(body, &ans) != nil || ans.Archive.Name != info.Name || ans.GSeq != 1 {
			t.Fatalf("proof of an archived record: %d %s", code, body)
		}
		ds := s.devSeqOf[1]
		code, body = get(fmt.Sprintf("/v1/devices/%s/records/%d/proof", ds[0], ds[1]))
		if code != http.StatusGone || !strings.Contains(string(body), info.Name) {
			t.Fatalf("proof of an archived record by device: %d %s", code, body)
		}
		code, body = get(fmt.Sprintf("/v1/records/%d/proof", s.total))
		if code != http.StatusOK || !bytes.Equal(body, s.bundles[s.total]) {
			t.Fatalf("proof of a kept record: %d %s", code, body)
		}
		code, body = get(fmt.Sprintf("/v1/records?from_gseq=1&to_gseq=%d", s.total))
		var ra httpapi.RangeAnswer
		if code != http.StatusOK || json.Unmarshal(body, &ra) != nil || len(ra.Archives) != 1 || ra.Archives[0].Name != info.Name ||
			uint64(len(ra.Records)) != s.total-info.LastGSeq || ra.Records[0].GSeq != info.LastGSeq+1 {
			t.Fatalf("record range: %d %s", code, body)
		}
		code, body = get(fmt.Sprintf("/v1/batches/%d", info.LastBatch))
		if code != http.StatusGone || !strings.Contains(string(body), info.Name) {
			t.Fatalf("an archived batch: %d %s", code, body)
		}
		if code, body = get(fmt.Sprintf("/v1/batches/%d", info.LastBatch+1)); code != http.StatusOK {
			t.Fatalf("a kept batch: %d %s", code, body)
		}
		// A device's next record continues both chains.
		d := s.e.devs[0]
		rec, err := st.Append(context.Background(), store.Pending{DID: d.key.DID(), Seq: d.seq + 1, Kind: "env", Envelope: e2eEnvelope(t, d.key, d.seq+1)})
		if err != nil || rec.GSeq != s.total+1 {
			t.Fatalf("append after archiving: %v %v, want gseq %d", rec, err, s.total+1)
		}
		// A replay of an archived record is still refused.
		if _, err := st.Append(context.Background(), store.Pending{DID: d.key.DID(), Seq: 1, Kind: "env", Envelope: []byte("{}")}); !errors.Is(err, store.ErrReplay) {
			t.Fatalf("replay of an archived seq: %v, want store.ErrReplay", err)
		}
		_ = st.Close()

		// A second archive with nothing more before the cutoff.
		_, err = archive.Create(ctx, dir, s.options(filepath.Join(t.TempDir(), "again.ea")))
		if !errors.Is(err, archive.ErrNothingToArchive) {
			t.Fatalf("second archive: %v, want archive.ErrNothingToArchive", err)
		}
		// The archive file, checked whole; one altered byte is caught.
		sum, err := archive.Verify(out, s.trust, 2)
		if err != nil || sum.Records != info.Records || sum.SM3 != info.SM3 {
			t.Fatalf("verify archive: %+v %v", sum, err)
		}
		raw, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		altered := filepath.Join(t.TempDir(), "altered.ea")
		i := bytes.Index(raw, []byte(`"t":"record"`))
		mod := bytes.Clone(raw)
		mod[i+len(`"t":"record"`)+40] ^= 1
		if err := os.WriteFile(altered, mod, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := archive.Verify(altered, s.trust, 2); err == nil {
			t.Fatal("an altered archive verified")
		}
		// A proof from the archive is a search: it decodes only its own
		// batch, so the record of a later batch is still served (and
		// verifies) from the altered file, while the altered record's
		// own bundle is refused or does not verify.
		if info.LastBatch < 2 {
			t.Fatalf("the archive holds %d batch; the search needs two", info.LastBatch)
		}
		// The first record's salt altered: its batch no longer hashes to
		// its header's root.
		j := bytes.Index(raw, []byte(`"salt":"`)) + len(`"salt":"`) + 2
		mod = bytes.Clone(raw)
		mod[j] = map[bool]byte{true: 'B', false: 'A'}[mod[j] == 'A']
		if err := os.WriteFile(altered, mod, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := archive.Verify(altered, s.trust, 2); !errors.Is(err, archive.ErrFile) || !strings.Contains(err.Error(), "hash to") {
			t.Fatalf("an archive with a record's salt altered: %v, want archive.ErrFile naming the root", err)
		}
		if b, err := archive.Bundle(altered, info.LastGSeq); err != nil {
			t.Fatalf("bundle of the last record from an archive altered in its first batch: %v", err)
		} else if _, err := b.Verify(s.trust, nil); err != nil {
			t.Fatalf("bundle of the last record from an archive altered in its first batch: %v", err)
		}
		if b, err := archive.Bundle(altered, 1); err == nil {
			if _, err := b.Verify(s.trust, nil); err == nil {
				t.Fatal("the altered first batch gave a bundle that verifies")
			}
		}
		// A record line that names another kind further on is refused
		// where it is decoded.
		twoKinds := bytes.Replace(raw, []byte(`{"t":"record",`), []byte(`{"t":"record","t":"batch",`), 1)
		if err := os.WriteFile(altered, twoKinds, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := archive.Bundle(altered, 1); !errors.Is(err, archive.ErrFile) || !strings.Contains(err.Error(), `says "batch"`) {
			t.Fatalf("a record line that says batch: %v, want archive.ErrFile naming it", err)
		}
		if err := os.WriteFile(altered, raw[:len(raw)-10], 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := archive.Verify(altered, s.trust, 2); !errors.Is(err, archive.ErrFile) {
			t.Fatalf("a truncated archive: %v, want archive.ErrFile", err)
		}
	})

	// gateway repair on a store with an archive: the archived records are
	// neither lost nor read back from the value logs, the batch chain
	// continues after the archived batches, replays stay refused.
	t.Run("RepairKeepsArchive", func(t *testing.T) {
		dir := s.copyStore(t)
		info, err := archive.Create(context.Background(), dir, s.options(filepath.Join(t.TempDir(), "r.ea")))
		if err != nil {
			t.Fatal(err)
		}
		blog := func() uint64 {
			st := openArchivedStore(t, dir, s.e.lgw.Signer, &testutil.SyncBuffer{})
			defer st.Close()
			last, err := batch.StoreLog(st.DB()).Last()
			if err != nil {
				t.Fatal(err)
			}
			return last.Seq
		}
		lastBatch := blog()
		rep, err := RepairStore(dir, time.Now(), slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Lost) != 0 || len(rep.DroppedBatch) != 0 || rep.Batches != lastBatch || rep.Anchored != lastBatch || rep.FromValueLog != 0 {
			t.Fatalf("repair of an archived store: %+v (last batch %d)", rep, lastBatch)
		}
		var log testutil.SyncBuffer
		st := openArchivedStore(t, dir, s.e.lgw.Signer, &log)
		if st.LastGSeq() != s.total || st.ArchivedThrough() != info.LastGSeq || strings.Contains(log.String(), "hole") {
			t.Fatalf("after repair: last %d archived through %d; log:\n%s", st.LastGSeq(), st.ArchivedThrough(), log.String())
		}
		if _, err := st.Get(1); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("archived record 1 after repair: %v", err)
		}
		// The archived batches are not read back from the value logs.
		for seq := info.FirstBatch; seq <= info.LastBatch; seq++ {
			if _, err := batch.StoreLog(st.DB()).Get(seq); !errors.Is(err, batch.ErrNotFound) {
				t.Fatalf("archived batch %d after repair: %v, want batch.ErrNotFound", seq, err)
			}
		}
		d := s.e.devs[0]
		if _, err := st.Append(context.Background(), store.Pending{DID: d.key.DID(), Seq: 1, Kind: "env", Envelope: []byte("{}")}); !errors.Is(err, store.ErrReplay) {
			t.Fatalf("replay of an archived seq after repair: %v, want store.ErrReplay", err)
		}
	})

	t.Run("RefusesWithoutDeleting", func(t *testing.T) {
		dir := s.copyStore(t)
		out := filepath.Join(t.TempDir(), "x.ea")
		o := s.options(out)
		// A wrong gateway key: no batch header verifies, nothing is
		// deleted.
		o.GatewayPub = append([]byte(nil), s.pub...)
		o.GatewayPub[len(o.GatewayPub)-1] ^= 1
		if _, err := archive.Create(context.Background(), dir, o); err == nil || !strings.Contains(err.Error(), "nothing deleted") {
			t.Fatalf("archive with a wrong gateway key: %v", err)
		}
		st := openArchivedStore(t, dir, s.e.lgw.Signer, &testutil.SyncBuffer{})
		if _, err := st.Get(1); err != nil || len(st.Archives()) != 0 {
			t.Fatalf("store after a refused archive: %v, archives %v", err, st.Archives())
		}
	})

	// kill -9 at each step: before the deletion is marked the store is as
	// it was; after, its next open finishes the deletion.
	for _, step := range []string{"written", "verified", "marked", "deleting"} {
		t.Run("Kill9At_"+step, func(t *testing.T) {
			dir := s.copyStore(t)
			out := filepath.Join(t.TempDir(), "k.ea")
			args, _ := json.Marshal(archiveChildArgs{Dir: dir, Out: out, Before: s.cutoff, RPC: s.e.rpc, Trust: s.trustPath, Pub: s.pub, Step: step})
			cmd := exec.Command(os.Args[0], "-test.run=^TestArchiveChild$", "-test.count=1")
			cmd.Env = append(os.Environ(), "EDGEANCHOR_ARCHIVE_CHILD="+string(args))
			outb, err := cmd.CombinedOutput()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
				t.Fatalf("child was not killed at %s: %v\n%s", step, err, outb)
			}
			var log testutil.SyncBuffer
			st := openArchivedStore(t, dir, s.e.lgw.Signer, &log)
			_, err = st.Get(1)
			switch step {
			case "written", "verified":
				if err != nil || len(st.Archives()) != 0 {
					t.Fatalf("after kill -9 at %s: record 1 %v, archives %v; want the old state", step, err, st.Archives())
				}
			default:
				if !errors.Is(err, store.ErrNotFound) || len(st.Archives()) != 1 {
					t.Fatalf("after kill -9 at %s: record 1 %v, archives %v; want the new state", step, err, st.Archives())
				}
				a := st.Archives()[0]
				for g := uint64(1); g <= s.total; g++ {
					if _, err := st.Get(g); (g <= a.LastGSeq) != errors.Is(err, store.ErrNotFound) {
						t.Fatalf("record %d after the roll-forward: %v", g, err)
					}
				}
				if _, err := archive.Bundle(out, 1); err != nil {
					t.Fatalf("archive after kill -9 at %s: %v", step, err)
				}
			}
			if st.LastGSeq() != s.total || strings.Contains(log.String(), "hole") {
				t.Fatalf("after kill -9 at %s: last gseq %d, want %d; log:\n%s", step, st.LastGSeq(), s.total, log.String())
			}
		})
	}
}

type archiveChildArgs struct {
	Dir, Out, RPC, Trust, Step string
	Before                     time.Time
	Pub                        []byte
}

// TestArchiveChild runs ArchiveStore in a child process of TestArchive and
// kills itself (SIGKILL) at the step it is told.
func TestArchiveChild(t *testing.T) {
	raw := os.Getenv("EDGEANCHOR_ARCHIVE_CHILD")
	if raw == "" {
		t.Skip("run by TestArchive as a child process")
	}
	var a archiveChildArgs
	if err := json.Unmarshal([]byte(raw), &a); err != nil {
		t.Fatal(err)
	}
	trust, err := evidence.ReadTrustFile(a.Trust)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ledgerclient.NewClient(a.RPC, ledgerclient.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	step := func(step string) {
		if step == a.Step {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	}
	_, err = archive.Create(context.Background(), a.Dir, archive.Options{Before: a.Before, Out: a.Out, Ledger: c, GatewayPub: a.Pub, Trust: trust, Workers: 2, Step: step})
	t.Fatalf("archive ran past step %s: %v", a.Step, err)
}
