package wages

import (
	"fmt"
	"sort"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// Statuses of a worker in a report (docs/wages.md).
const (
	StatusPaidOnTime     = "paid_on_time"
	StatusPaidLate       = "paid_late"
	StatusUnpaid         = "unpaid_at_due_date"
	StatusBelowFloor     = "below_floor"
	StatusNoAttendance   = "paid_without_attendance"
	StatusCannotConclude = "cannot_conclude"
)

// Statuses lists every status, in the order a report counts them.
var Statuses = []string{StatusPaidOnTime, StatusPaidLate, StatusUnpaid, StatusBelowFloor, StatusNoAttendance, StatusCannotConclude}

// Wage is one verified wage record of a worker for the period.
type Wage struct {
	GSeq       uint64     `json:"gseq"`
	Batch      uint64     `json:"batch"`
	Device     device.DID `json:"device"`
	Seq        uint64     `json:"seq"`
	AmountFen  int64      `json:"amount_fen"`
	Payer      string     `json:"payer"`
	AnchoredBy string     `json:"anchored_by"` // RFC 3339, the ledger's time
	OnTime     bool       `json:"on_time"`
}

// Worker is one worker reference's line of a report.
type Worker struct {
	Ref  string `json:"worker"`
	Name string `json:"name,omitempty"` // from the inspector's local ID list, never sent
	// Days is the number of site-local dates in the period with an `in`
	// record anchored by the due date; DaysWithoutOut of them have no
	// `out` that day.
	Days           int    `json:"days"`
	DaysWithoutOut int    `json:"days_without_out"`
	Wages          []Wage `json:"wages"`
	// PaidFen sums the wages anchored by the due date; LateFen those
	// anchored after it.
	PaidFen int64  `json:"paid_fen"`
	LateFen int64  `json:"late_fen"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
}

// Report is the wage report of one site and period.
type Report struct {
	Gateway     device.DID     `json:"gateway"`
	Site        string         `json:"site,omitempty"`
	Period      string         `json:"period"`
	Zone        string         `json:"zone"`
	PeriodStart string         `json:"period_start"`
	PeriodEnd   string         `json:"period_end"`
	Due         string         `json:"due"`
	FloorFen    int64          `json:"floor_fen"`
	Complete    bool           `json:"complete"` // the log is complete through the due date
	Missing     []string       `json:"missing"`
	Later       []string       `json:"later"`
	FirstBatch  uint64         `json:"first_batch"`
	LastBatch   uint64         `json:"last_batch"`
	Closing     uint64         `json:"closing_batch"` // first batch anchored after the due date (0: none)
	Checked     Counts         `json:"checked"`
	Counts      map[string]int `json:"counts"`
	Workers     []Worker       `json:"workers"`
}

// Build makes the report from verified evidence. names maps worker
// references to names (may be nil); it is the inspector's, computed
// locally (Names).
func Build(ev *Evidence, o Options, names map[string]string) (*Report, error) {
	start, end, due, err := o.Window()
	if err != nil {
		return nil, err
	}
	r := &Report{
		Gateway: ev.Gateway, Site: ev.Site, Period: o.Period, Zone: ZoneName(o.Zone),
		PeriodStart: anchor.FormatTime(start), PeriodEnd: anchor.FormatTime(end), Due: anchor.FormatTime(due),
		FloorFen: o.FloorFen, Complete: len(ev.Missing) == 0,
		Missing: append([]string{}, ev.Missing...), Later: append([]string{}, ev.Later...),
		Checked: ev.Checked, Counts: map[string]int{}, Workers: []Worker{},
	}
	if n := len(ev.Batches); n > 0 {
		r.FirstBatch, r.LastBatch = ev.Batches[0].Header.Seq, ev.Batches[n-1].Header.Seq
	}
	if ev.Closing >= 0 {
		r.Closing = ev.Batches[ev.Closing].Header.Seq
	}
	type day struct{ in, out bool }
	attend := map[string]map[string]*day{}
	wages := map[string][]Wage{}
	recs := append([]Record(nil), ev.Records...)
	sortRecords(recs)
	for _, rec := range recs {
		switch rec.Kind {
		case device.KindAttendance:
			// The day is the terminal's, in the site's zone; the record
			// counts if it was anchored by the due date and its timestamp
			// is not after the anchoring (beyond the clock tolerance).
			if rec.TS.Before(start) || !rec.TS.Before(end) || rec.AnchoredBy.After(due) || rec.TS.After(rec.AnchoredBy.Add(ClockTolerance)) {
				continue
			}
			d := rec.TS.In(o.Zone).Format("2006-01-02")
			m := attend[rec.Worker]
			if m == nil {
				m = map[string]*day{}
				attend[rec.Worker] = m
			}
			if m[d] == nil {
				m[d] = &day{}
			}
			if rec.Direction == "in" {
				m[d].in = true
			} else {
				m[d].out = true
			}
		case device.KindWage:
			if rec.Period != o.Period {
				continue
			}
			wages[rec.Worker] = append(wages[rec.Worker], Wage{
				GSeq: rec.GSeq, Batch: rec.Batch, Device: rec.DID, Seq: rec.Seq, AmountFen: rec.AmountFen, Payer: rec.Payer,
				AnchoredBy: anchor.FormatTime(rec.AnchoredBy), OnTime: !rec.AnchoredBy.After(due),
			})
		}
	}
	refs := map[string]bool{}
	for ref, days := range attend {
		for _, d := range days {
			if d.in {
				refs[ref] = true
			}
		}
	}
	for ref := range wages {
		refs[ref] = true
	}
	cannot := ""
	if !r.Complete {
		cannot = fmt.Sprintf("the anchored log is not complete through the due date: %s", ev.Missing[0])
		if n := len(ev.Missing); n > 1 {
			cannot += fmt.Sprintf(" (and %d more)", n-1)
		}
	}
	for ref := range refs {
		w := Worker{Ref: ref, Name: names[ref], Wages: wages[ref]}
		if w.Wages == nil {
			w.Wages = []Wage{}
		}
		for _, d := range attend[ref] {
			if d.in {
				w.Days++
				if !d.out {
					w.DaysWithoutOut++
				}
			}
		}
		for _, wg := range w.Wages {
			if wg.OnTime {
				w.PaidFen += wg.AmountFen
			} else {
				w.LateFen += wg.AmountFen
			}
		}
		w.Status, w.Reason = status(&w, o, cannot, due)
		r.Counts[w.Status]++
		r.Workers = append(r.Workers, w)
	}
	for _, s := range Statuses {
		r.Counts[s] += 0
	}
	sort.Slice(r.Workers, func(a, b int) bool { return r.Workers[a].Ref < r.Workers[b].Ref })
	return r, nil
}

func status(w *Worker, o Options, cannot string, due time.Time) (string, string) {
	dueS := anchor.FormatTime(due)
	switch {
	case cannot != "":
		return StatusCannotConclude, cannot
	case w.Days == 0:
		return StatusNoAttendance, fmt.Sprintf("%d wage record(s) for %s, no day attended", len(w.Wages), o.Period)
	case len(w.Wages) == 0:
		return StatusUnpaid, fmt.Sprintf("attended %d day(s); no wage record for %s anchored by %s", w.Days, o.Period, dueS)
	case w.PaidFen == 0:
		first := w.Wages[0].AnchoredBy
		for _, wg := range w.Wages {
			first = min(first, wg.AnchoredBy)
		}
		return StatusPaidLate, fmt.Sprintf("attended %d day(s); first wage record anchored by %s, after %s", w.Days, first, dueS)
	case o.FloorFen > 0 && w.PaidFen < o.FloorFen*int64(w.Days):
		return StatusBelowFloor, fmt.Sprintf("attended %d day(s); paid %d fen by %s, below %d fen (%d a day)", w.Days, w.PaidFen, dueS, o.FloorFen*int64(w.Days), o.FloorFen)
	}
	return StatusPaidOnTime, fmt.Sprintf("attended %d day(s); paid %d fen by %s", w.Days, w.PaidFen, dueS)
}
