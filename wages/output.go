package wages

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/safetext"
)

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// CSVHeader is the first line of WriteCSV.
var CSVHeader = []string{"worker", "name", "days", "days_without_out", "paid_fen", "late_fen", "wage_records", "first_anchored_by", "status", "reason"}

// WriteCSV writes one line per worker. Cells that a spreadsheet would
// read as a formula are prefixed with a quote.
func (r *Report) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(CSVHeader); err != nil {
		return err
	}
	for _, wk := range r.Workers {
		first := ""
		for _, wg := range wk.Wages {
			if first == "" || wg.AnchoredBy < first {
				first = wg.AnchoredBy
			}
		}
		row := []string{wk.Ref, wk.Name, strconv.Itoa(wk.Days), strconv.Itoa(wk.DaysWithoutOut),
			strconv.FormatInt(wk.PaidFen, 10), strconv.FormatInt(wk.LateFen, 10), strconv.Itoa(len(wk.Wages)), first, wk.Status, wk.Reason}
		for i, c := range row {
			if c != "" && strings.ContainsRune("=+-@\t\r", rune(c[0])) {
				row[i] = "'" + c
			}
		}
		if err := cw.Write(row); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteTable writes the report for a terminal: a summary, what is missing,
// then one line per worker, untrusted text escaped.
func (r *Report) WriteTable(w io.Writer) error {
	bw := bufio.NewWriter(w)
	fmt.Fprintln(bw, safetext.Sprintf("wage report: gateway %s (site %s), period %s (%s .. %s, zone %s)", r.Gateway, r.Site, r.Period, r.PeriodStart, r.PeriodEnd, r.Zone))
	fmt.Fprintf(bw, "due date %s, daily floor %d fen; batches %d..%d examined, first anchored after the due date: %d\n", r.Due, r.FloorFen, r.FirstBatch, r.LastBatch, r.Closing)
	fmt.Fprintf(bw, "verified: %d batches, %d records, %d payroll records (%d device signatures), %d devices\n",
		r.Checked.Batches, r.Checked.Records, r.Checked.PayrollRecords, r.Checked.DeviceSignatures, r.Checked.Devices)
	if r.Complete {
		fmt.Fprintln(bw, "✓ the anchored log is complete through the due date")
	} else {
		fmt.Fprintln(bw, "✗ the anchored log is NOT complete through the due date; no worker can be concluded:")
		for _, m := range r.Missing {
			fmt.Fprintln(bw, safetext.Sprintf("  missing: %s", m))
		}
	}
	for _, m := range r.Later {
		fmt.Fprintln(bw, safetext.Sprintf("  after the due date: %s", m))
	}
	var parts []string
	for _, s := range Statuses {
		parts = append(parts, fmt.Sprintf("%s %d", s, r.Counts[s]))
	}
	fmt.Fprintf(bw, "%d workers: %s\n\n", len(r.Workers), strings.Join(parts, ", "))
	tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "WORKER\tNAME\tDAYS\tPAID (FEN)\tLATE (FEN)\tSTATUS\tREASON")
	for _, wk := range r.Workers {
		fmt.Fprintln(tw, safetext.Sprintf("%s\t%s\t%d\t%d\t%d\t%s\t%s", short(wk.Ref), wk.Name, wk.Days, wk.PaidFen, wk.LateFen, wk.Status, wk.Reason))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	return bw.Flush()
}

// short abbreviates a 64-hex reference for the table (JSON and CSV carry
// it whole).
func short(ref string) string {
	if len(ref) > 16 {
		return ref[:16] + "…"
	}
	return ref
}

// MaxIDList bounds an inspector's ID list.
const MaxIDList = 1 << 20

// Names maps the salted references of the inspector's ID list to names:
// each line "ID,name" (or "ID" alone) gives device.PersonRef(salt, ID).
// The computation is local: nothing of salt or list is sent or logged.
func Names(salt []byte, list io.Reader) (map[string]string, error) {
	if len(salt) == 0 {
		return nil, fmt.Errorf("%w: empty site salt", ErrOptions)
	}
	cr := csv.NewReader(io.LimitReader(list, MaxIDList))
	cr.FieldsPerRecord = -1
	out := map[string]string{}
	line := 0
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		line++
		if err != nil {
			return nil, fmt.Errorf("%w: ID list line %d: %v", ErrOptions, line, err)
		}
		id := strings.TrimSpace(rec[0])
		if id == "" || len(rec) > 2 {
			return nil, fmt.Errorf("%w: ID list line %d: want ID or ID,name", ErrOptions, line)
		}
		name := id
		if len(rec) == 2 {
			name = strings.TrimSpace(rec[1])
		}
		out[device.PersonRef(salt, id)] = name
	}
}

// Handler serves wage reports for a portal: GET with ?period=YYYY-MM
// (and optionally due_days, floor_fen, format=json|csv) answers the
// report of the configured gateway, built with the configured trust, zone
// and defaults. It is a plain http.Handler: mount it where the portal
// wants. Names are never applied (the salt stays on the inspector's
// machine).
type Handler struct {
	Gateway *Gateway
	Options Options // Period is taken from the request
	Log     *slog.Logger
	// Timeout bounds one report (default 2 minutes).
	Timeout time.Duration
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	o := h.Options
	o.Period = q.Get("period")
	for _, p := range []struct {
		name string
		set  func(int64)
	}{{"due_days", func(v int64) { o.DueDays = int(v); o.Due = time.Time{} }}, {"floor_fen", func(v int64) { o.FloorFen = v }}} {
		if s := q.Get(p.name); s != "" {
			v, err := strconv.ParseInt(s, 10, 32)
			if err != nil {
				http.Error(w, p.name+" must be an integer", http.StatusBadRequest)
				return
			}
			p.set(v)
		}
	}
	format := q.Get("format")
	if format != "" && format != "json" && format != "csv" {
		http.Error(w, "format must be json or csv", http.StatusBadRequest)
		return
	}
	if _, _, _, err := o.Window(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	ev, err := Collect(ctx, h.Gateway, o)
	var rep *Report
	if err == nil {
		rep, err = Build(ev, o, nil)
	}
	if err != nil {
		if h.Log != nil {
			h.Log.Error("wage report failed", "period", o.Period, "error", err)
		}
		http.Error(w, "wage report failed: "+err.Error(), http.StatusBadGateway)
		return
	}
	if format == "csv" {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		_ = rep.WriteCSV(w)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = rep.WriteJSON(w)
}

var _ http.Handler = (*Handler)(nil)
