package wages

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/sim/profile"
	"github.com/edgeanchor/edgeanchor/wages/wagestest"
)

func (s *site) api() *Gateway { return &Gateway{API: s.API()} }

// anchoredBy verifies the bundle of gseq and returns its anchored-by time.
func (s *site) anchoredBy(gseq uint64) time.Time {
	s.t.Helper()
	b, err := s.api().bundle(context.Background(), gseq)
	if err != nil {
		s.t.Fatal(err)
	}
	v, err := b.Verify(s.Trust, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	by, err := anchor.ParseTime(v.AnchoredBy)
	if err != nil {
		s.t.Fatal(err)
	}
	return by
}

// seededMonth builds wagestest's seeded month and the report options.
func seededMonth(t testing.TB, devices int) (*site, Options) {
	ws, due := wagestest.SeededMonth(t, devices)
	s := &site{Site: ws, t: t}
	return s, Options{Gateway: ws.LGW.DID(), Period: wagestest.Period, Zone: profile.SiteZone, Due: due, FloorFen: wagestest.FloorFen, Trust: ws.Trust}
}

// site adds the package's own views to a wagestest.Site.
type site struct {
	*wagestest.Site
	t testing.TB
}

func (s *site) report(o Options) *Report {
	s.t.Helper()
	began := time.Now()
	defer func() { s.t.Logf("report in %s", time.Since(began)) }()
	ev, err := Collect(context.Background(), s.api(), o)
	if err != nil {
		s.t.Fatal(err)
	}
	r, err := Build(ev, o, nil)
	if err != nil {
		s.t.Fatal(err)
	}
	return r
}

var caseStatus = map[string]string{
	profile.CaseUnpaid: StatusUnpaid, profile.CaseLate: StatusPaidLate, profile.CaseBelowFloor: StatusBelowFloor, profile.CaseGhost: StatusNoAttendance,
}

// TestSeededMonth: a month of a site of a few hundred workers, arrears
// seeded by the simulator; the report finds exactly the seeded cases, every
// other worker paid on time, every record verified. Then a record deleted
// from the gateway's store, and a batch not anchored, make every worker
// "cannot conclude", naming what is missing.
func TestSeededMonth(t *testing.T) {
	began := time.Now()
	s, o := seededMonth(t, 4)
	t.Logf("seeded in %s", time.Since(began))
	r := s.report(o)
	if !r.Complete || len(r.Missing) != 0 {
		t.Fatalf("log not complete: %v", r.Missing)
	}
	want := map[string]string{}
	days := map[string]int{}
	for _, g := range s.Gens {
		for _, c := range wagestest.SeededOf(g) {
			if c.Period == "2026-10" {
				want[c.Worker] = caseStatus[c.Case]
				days[c.Worker] = c.Days
			}
		}
	}
	if len(want) != 4*5 {
		t.Fatalf("%d seeded cases, want %d", len(want), 4*5)
	}
	if len(r.Workers) < 150 {
		t.Fatalf("%d workers, want a few hundred", len(r.Workers))
	}
	for _, w := range r.Workers {
		ws, ok := want[w.Ref]
		if !ok {
			ws = StatusPaidOnTime
		}
		if w.Status != ws {
			t.Errorf("worker %s: %s (%s), seeded %s", w.Ref, w.Status, w.Reason, ws)
		}
		if d, ok := days[w.Ref]; ok && d != w.Days {
			t.Errorf("worker %s: %d days, the simulator counted %d", w.Ref, w.Days, d)
		}
		delete(want, w.Ref)
	}
	for ref, st := range want {
		t.Errorf("seeded worker %s (%s) is not in the report", ref, st)
	}
	if r.Checked.PayrollRecords != r.Checked.Records || r.Checked.DeviceSignatures != r.Checked.Records || r.Checked.Records < 4000 {
		t.Errorf("checked %+v: want every record verified", r.Checked)
	}
	t.Logf("%d workers, counts %v, checked %+v", len(r.Workers), r.Counts, r.Checked)

	// The CSV has one line per worker; the table names the counts.
	var csvOut, table bytes.Buffer
	if err := r.WriteCSV(&csvOut); err != nil {
		t.Fatal(err)
	}
	csvText := csvOut.String()
	rows, err := csv.NewReader(strings.NewReader(csvText)).ReadAll()
	if err != nil || len(rows) != len(r.Workers)+1 {
		t.Fatalf("csv: %d rows, err %v", len(rows), err)
	}
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), fmt.Sprintf("%s %d", StatusUnpaid, r.Counts[StatusUnpaid])) {
		t.Errorf("table without the unpaid count:\n%s", table.String())
	}

	// The portal's handler answers the same report.
	h := &Handler{Gateway: s.api(), Options: o}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/wages?period=2026-10&format=csv", nil))
	if rec.Code != 200 || rec.Body.String() != csvText {
		got, want := strings.Split(rec.Body.String(), "\n"), strings.Split(csvText, "\n")
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Errorf("handler: %d: line %d\n%s\nwant\n%s", rec.Code, i, got[i], want[i])
				break
			}
		}
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/wages?period=2026-13", nil))
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "period") {
		t.Errorf("bad period: %d %s", rec.Code, rec.Body.String())
	}

	// Delete one on-time wage record from the gateway's store.
	var victim Worker
	var gone Wage
	for _, w := range r.Workers {
		if w.Status == StatusPaidOnTime {
			victim, gone = w, w.Wages[0]
			break
		}
	}
	st := s.G.Store()
	if err := st.DB().Update(func(txn *badger.Txn) error {
		return txn.Delete(binary.BigEndian.AppendUint64([]byte("r/"), gone.GSeq))
	}); err != nil {
		t.Fatal(err)
	}
	r2 := s.report(o)
	if r2.Complete || !strings.Contains(strings.Join(r2.Missing, "\n"), fmt.Sprintf("gseq %d..%d missing", gone.GSeq, gone.GSeq)) {
		t.Fatalf("after deleting gseq %d: complete %v, missing %v", gone.GSeq, r2.Complete, r2.Missing)
	}
	for _, w := range r2.Workers {
		if w.Status != StatusCannotConclude {
			t.Errorf("after the deletion worker %s is %s", w.Ref, w.Status)
		}
		if w.Ref == victim.Ref && !strings.Contains(w.Reason, "missing") {
			t.Errorf("victim's reason %q", w.Reason)
		}
	}
}

// TestUnanchoredBatch: a batch the ledger never anchored, before any batch
// anchored after the due date, leaves nothing concluded; the same log with
// an earlier due date (the batch after it) still concludes.
func TestUnanchoredBatch(t *testing.T) {
	s, o := seededMonth(t, 1)
	before := s.report(o)
	if !before.Complete {
		t.Fatalf("not complete: %v", before.Missing)
	}
	last := before.LastBatch
	s.anchoredBy(before.Workers[0].Wages[0].GSeq) // the gateway's proof cache holds every anchor now
	// Stop the ledger, store a record and cut its batch: it cannot be
	// anchored.
	s.Node.Stop()
	s.Feed(time.Date(2026, 12, 2, 0, 0, 0, 0, profile.SiteZone), func(profile.Reading) bool { return true })
	sb, err := s.An.Batcher.CutNow()
	if err != nil {
		t.Fatal(err)
	}
	if sb.Seq != last+1 {
		t.Fatalf("cut batch %d, want %d", sb.Seq, last+1)
	}
	late := o
	late.Due = time.Now().Add(time.Hour)
	r := s.report(late)
	if r.Complete || !strings.Contains(strings.Join(r.Missing, "\n"), fmt.Sprintf("batch %d (gseq from %d) is not anchored", sb.Seq, sb.First)) {
		t.Fatalf("unanchored batch: complete %v, missing %v", r.Complete, r.Missing)
	}
	for _, w := range r.Workers {
		if w.Status != StatusCannotConclude {
			t.Errorf("worker %s is %s with batch %d unanchored", w.Ref, w.Status, sb.Seq)
		}
	}
	// With the original due date the unanchored batch comes after the
	// closing batch: conclusions hold, it is listed as later.
	r = s.report(o)
	if !r.Complete || len(r.Later) == 0 {
		t.Fatalf("original due date: complete %v missing %v later %v", r.Complete, r.Missing, r.Later)
	}
}

// TestEvidencePack: the pack of an unpaid worker and of a worker paid on
// time verify offline and conclude what the report says; removing a
// record, altering a byte of a record, or headers of another span are
// refused naming the step.
func TestEvidencePack(t *testing.T) {
	s, o := seededMonth(t, 1)
	ev, err := Collect(context.Background(), s.api(), o)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Build(ev, o, nil)
	if err != nil {
		t.Fatal(err)
	}
	byStatus := map[string]Worker{}
	for _, w := range r.Workers {
		byStatus[w.Status] = w
	}
	pack := func(w Worker) []byte {
		p, err := MakePack(ev, o, w.Ref)
		if err != nil {
			t.Fatal(err)
		}
		b, err := p.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	unpaid := byStatus[StatusUnpaid]
	data := pack(unpaid)
	began := time.Now()
	res, err := VerifyPack(data, s.Trust, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pack of %d bytes verified in %s: %s", len(data), time.Since(began), res.Conclusion)
	want := fmt.Sprintf("worker %s attended %d day(s) in 2026-10; no wage record for 2026-10 was anchored by %s", unpaid.Ref, unpaid.Days, anchor.FormatTime(o.Due))
	if res.Conclusion != want {
		t.Fatalf("conclusion %q\nwant %q", res.Conclusion, want)
	}
	paid := byStatus[StatusPaidOnTime]
	res, err = VerifyPack(pack(paid), s.Trust, nil)
	if err != nil || res.Days != paid.Days || len(res.OnTime) != 1 || res.OnTime[0].AmountFen != paid.PaidFen {
		t.Fatalf("paid worker's pack: %v %+v", err, res)
	}

	var p Pack
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatal(err)
	}
	enc := func(p Pack) []byte {
		b, err := p.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	// The record holding the worker's wage would be the one to remove;
	// any record will do: the roots and the gseqs miss it.
	removed := p
	removed.Records = append(append([]PackRecord{}, p.Records[:len(p.Records)/2]...), p.Records[len(p.Records)/2+1:]...)
	swapped := p
	swapped.Batches = append([]PackBatch{}, p.Batches...)
	swapped.Batches[len(swapped.Batches)-1] = p.Batches[0] // the closing batch replaced by one from before the period
	early := p
	early.Batches = p.Batches[:len(p.Batches)-1] // no batch anchored after the due date
	altered := bytes.Clone(data)
	i := bytes.Index(altered, []byte(`"env":"`)) + 20
	altered[i] ^= 1
	if altered[i] == '"' || altered[i] == '\\' {
		altered[i] ^= 3
	}
	for _, c := range []struct {
		name string
		data []byte
		step string
	}{
		{"removed record", enc(removed), PackStepRecords},
		{"closing batch swapped", enc(swapped), PackStepChain},
		{"headers short of the due date", enc(early), PackStepChain},
		{"altered byte", altered, PackStepRecords},
		{"altered worker", bytes.Replace(data, []byte(unpaid.Ref), []byte(strings.Repeat("0", 64)), 1), PackStepWorker},
		{"not a pack", []byte(`{"type":"ProofBundle"}`), PackStepFormat},
	} {
		_, err := VerifyPack(c.data, s.Trust, nil)
		var pe *PackError
		if !errors.As(err, &pe) || pe.Step != c.step {
			t.Errorf("%s: %v, want a failure of step %q", c.name, err, c.step)
		}
	}

	// A device sequence gap still open when the log is read: nothing is
	// concluded, the gap is named.
	s.SkipSeq(0)
	s.Feed(time.Date(2026, 12, 2, 0, 0, 0, 0, profile.SiteZone), func(profile.Reading) bool { return true })
	s.Cut()
	r = s.report(o)
	if r.Complete || !strings.Contains(strings.Join(r.Missing, "\n"), "(an open sequence gap)") {
		t.Fatalf("sequence gap: complete %v, missing %v", r.Complete, r.Missing)
	}
	for _, w := range r.Workers {
		if w.Status != StatusCannotConclude {
			t.Errorf("worker %s is %s with a sequence gap open", w.Ref, w.Status)
		}
	}
}
