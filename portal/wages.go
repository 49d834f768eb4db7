package portal

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/portal/jobs"
	"github.com/edgeanchor/edgeanchor/wages"
)

// wageLimits bound the Wages page: runs kept (finished ones are dropped
// oldest first; each holds its verified evidence, for packs), runs at
// once, and how long one may take.
var wageLimits = jobs.Limits{What: "wage reports", Keep: 8, Running: 2, Timeout: 10 * time.Minute}

// statusMeaning explains each status as docs/wages.md does (a test holds
// the two to the same words).
var statusMeaning = map[string]string{
	wages.StatusPaidOnTime:     "attended at least one day; wage records for the period anchored by the due date sum to at least the floor times the days attended",
	wages.StatusBelowFloor:     "paid by the due date, but less than `--floor-fen` per day attended",
	wages.StatusPaidLate:       "attended; no wage record anchored by the due date, at least one after it",
	wages.StatusUnpaid:         "attended; no wage record for the period anchored by the due date nor after it, up to the newest anchored batch",
	wages.StatusNoAttendance:   "wage records for the period, no day attended",
	wages.StatusCannotConclude: "the anchored log is not complete through the due date; the report names what is missing",
}

// meaning is statusMeaning for the page (the flag's name is the form's
// field there).
func meaning(status string) string {
	return strings.ReplaceAll(statusMeaning[status], "`--floor-fen`", "the daily floor")
}

// wageParams are what one wage report runs on; wageResult is what it
// found.
type wageParams struct {
	Opts wages.Options
	API  string
}

type wageResult struct {
	ev  *wages.Evidence
	rep *wages.Report
}

type wageRuns = jobs.Registry[wageParams, wageResult]

type wageJob = jobs.Job[wageParams, wageResult]

func newWageRuns() *wageRuns {
	return jobs.New(wageLimits, func(ctx context.Context, p wageParams, progress jobs.Progress) (wageResult, error) {
		o := p.Opts
		o.Progress = func(phase string, done, total int) { progress(phase, uint64(done), uint64(total)) }
		var res wageResult
		var err error
		res.ev, err = wages.Collect(ctx, &wages.Gateway{API: p.API}, o)
		if err == nil {
			res.rep, err = wages.Build(res.ev, o, nil)
		}
		return res, err
	})
}

// wageFormView is the Wages form with its defaults.
type wageFormView struct {
	Gateways []gatewayChoice
	Period   string
	Zone     string
	DueDays  int
	Due      string
	FloorFen int64
}

func (s *Server) wageForm(ctx context.Context, r *http.Request) wageFormView {
	v := wageFormView{Gateways: s.auditForm(ctx).Gateways, Zone: s.cfg.WageZone, DueDays: s.cfg.WageDueDays, FloorFen: s.cfg.WageFloorFen}
	loc, err := wages.ParseZone(s.cfg.WageZone)
	if err != nil {
		loc = time.UTC
	}
	now := time.Now().In(loc)
	v.Period = time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, loc).AddDate(0, -1, 0).Format("2006-01")
	if r.Method == http.MethodPost { // a refused form shows what was entered
		v.Period, v.Zone, v.Due = r.PostFormValue("period"), r.PostFormValue("zone"), r.PostFormValue("due")
		if n, err := strconv.Atoi(r.PostFormValue("due_days")); err == nil {
			v.DueDays = n
		}
		if n, err := strconv.ParseInt(r.PostFormValue("floor_fen"), 10, 64); err == nil {
			v.FloorFen = n
		}
	}
	return v
}

func (s *Server) wagesPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, "wages", page{Title: "Wages", Nav: "wages", Data: s.wageForm(r.Context(), r)})
}

// wageOptions reads the form into report options (the trust is the
// portal's).
func (s *Server) wageOptions(r *http.Request) (wages.Options, string, error) {
	var o wages.Options
	did, err := device.ParseDID(r.PostFormValue("gateway"))
	if err != nil {
		return o, "", fmt.Errorf("gateway: %w", err)
	}
	api, ok := s.gateways[did]
	if !ok {
		return o, "", fmt.Errorf("gateway %s: no record API configured for it", did)
	}
	o.Gateway, o.Period, o.Trust = did, strings.TrimSpace(r.PostFormValue("period")), s.trust
	zone := strings.TrimSpace(r.PostFormValue("zone"))
	if o.Zone, err = wages.ParseZone(zone); err != nil {
		return o, "", fmt.Errorf("time zone %q: want an IANA name (Asia/Shanghai) or ±hh:mm", zone)
	}
	dd := strings.TrimSpace(r.PostFormValue("due_days"))
	if o.DueDays, err = strconv.Atoi(dd); err != nil || o.DueDays < 1 || o.DueDays > 366 {
		return o, "", fmt.Errorf("due days %q: want a whole number 1..366", dd)
	}
	if due := strings.TrimSpace(r.PostFormValue("due")); due != "" {
		if o.Due, err = time.Parse(time.RFC3339Nano, due); err != nil {
			return o, "", fmt.Errorf("due date %q: want RFC 3339, e.g. 2026-11-15T16:00:00Z", due)
		}
	}
	ff := strings.TrimSpace(r.PostFormValue("floor_fen"))
	if o.FloorFen, err = strconv.ParseInt(ff, 10, 64); err != nil || o.FloorFen < 0 || o.FloorFen > maxFloorFen {
		return o, "", fmt.Errorf("daily floor %q: want a whole number of fen 0..%d", ff, maxFloorFen)
	}
	if _, _, _, err := o.Window(); err != nil {
		return o, "", err
	}
	return o, api, nil
}

func (s *Server) wagesPost(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, err error) {
		w.WriteHeader(code)
		s.render(w, r, "wages", page{Title: "Wages", Nav: "wages", Err: err.Error(), Data: s.wageForm(r.Context(), r)})
	}
	o, api, err := s.wageOptions(r)
	if err != nil {
		fail(http.StatusBadRequest, err)
		return
	}
	j, err := s.wageRuns.Start(s.baseCtx(r), randomHex(12), wageParams{Opts: o, API: api})
	if err != nil {
		fail(http.StatusTooManyRequests, err)
		return
	}
	s.log.Info("portal wage report started", "gateway", o.Gateway, "period", o.Period, "id", j.ID)
	http.Redirect(w, r, "/wages/"+j.ID, http.StatusSeeOther)
}

func (s *Server) wageJob(w http.ResponseWriter, r *http.Request) *wageJob {
	return runOf(w, r, s.wageRuns, "wage report")
}

// wageResultOf returns j's report and evidence, or answers 409 while it
// runs and 502 when it failed.
func wageResultOf(w http.ResponseWriter, j *wageJob) (*wages.Report, *wages.Evidence) {
	o := j.Outcome()
	switch {
	case !o.Finished:
		http.Error(w, "the wage report is still running", http.StatusConflict)
	case o.Err != nil:
		http.Error(w, "the wage report could not run: "+o.Err.Error(), http.StatusBadGateway)
	default:
		return o.Result.rep, o.Result.ev
	}
	return nil, nil
}

type statusCount struct {
	Status  string
	Count   int
	Meaning string
}

type wageRunView struct {
	ID, Gateway, Period, Zone, Due string
	DueDays                        int
	FloorFen                       int64
	Status                         jobs.Status
	Err                            string
	Took                           string
	Report                         *wages.Report
	Counts                         []statusCount
	Filter                         string
	Rows                           []wages.Worker
}

var refPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

func (s *Server) wageRunPage(w http.ResponseWriter, r *http.Request) {
	j := s.wageJob(w, r)
	if j == nil {
		return
	}
	filter := r.URL.Query().Get("status")
	if _, ok := statusMeaning[filter]; filter != "" && !ok {
		http.Error(w, fmt.Sprintf("status %q: want one of %s", filter, strings.Join(wages.Statuses, ", ")), http.StatusBadRequest)
		return
	}
	jo, o := j.Params.Opts, j.Outcome()
	_, _, due, _ := jo.Window()
	v := wageRunView{ID: j.ID, Gateway: string(jo.Gateway), Period: jo.Period, Zone: wages.ZoneName(jo.Zone),
		Due: due.UTC().Format(time.RFC3339Nano), DueDays: jo.DueDays, FloorFen: jo.FloorFen, Status: o.Status, Filter: filter, Report: o.Result.rep}
	if o.Err != nil {
		v.Err = o.Err.Error()
	}
	if o.Finished {
		v.Took = o.Took.Round(time.Millisecond).String()
	}
	if v.Report != nil {
		for _, st := range wages.Statuses {
			v.Counts = append(v.Counts, statusCount{Status: st, Count: v.Report.Counts[st], Meaning: meaning(st)})
		}
		for _, wk := range v.Report.Workers {
			if filter == "" || wk.Status == filter {
				v.Rows = append(v.Rows, wk)
			}
		}
	}
	s.render(w, r, "wagesrun", page{Title: "Wage report", Nav: "wages", Data: v})
}

func (s *Server) wageStatus(w http.ResponseWriter, r *http.Request) {
	if j := s.wageJob(w, r); j != nil {
		serveStatus(w, j.Status())
	}
}

func (s *Server) wageJSON(w http.ResponseWriter, r *http.Request) {
	s.wageDownload(w, r, "application/json", "json", (*wages.Report).WriteJSON)
}

func (s *Server) wageCSV(w http.ResponseWriter, r *http.Request) {
	s.wageDownload(w, r, "text/csv; charset=utf-8", "csv", (*wages.Report).WriteCSV)
}

// wageDownload answers a finished run's report as a file of type ctype.
func (s *Server) wageDownload(w http.ResponseWriter, r *http.Request, ctype, ext string, write func(*wages.Report, io.Writer) error) {
	j := s.wageJob(w, r)
	if j == nil {
		return
	}
	rep, _ := wageResultOf(w, j)
	if rep == nil {
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="wages-%s-%s.%s"`, rep.Period, j.ID, ext))
	_ = write(rep, w)
}

// wagePack answers the evidence pack of ?worker=REF: the bytes
// `edgeanchor wages --pack-worker REF` writes for the same report.
func (s *Server) wagePack(w http.ResponseWriter, r *http.Request) {
	j := s.wageJob(w, r)
	if j == nil {
		return
	}
	worker := r.URL.Query().Get("worker")
	if !refPattern.MatchString(worker) {
		http.Error(w, "worker: want a worker reference, 64 lowercase hex digits", http.StatusBadRequest)
		return
	}
	rep, ev := wageResultOf(w, j)
	if rep == nil {
		return
	}
	p, err := wages.MakePack(ev, j.Params.Opts, worker)
	var b []byte
	if err == nil {
		b, err = p.Encode()
	}
	if err != nil {
		http.Error(w, "no evidence pack: "+err.Error(), http.StatusConflict)
		return
	}
	s.log.Info("portal wage pack", "id", j.ID, "worker", worker, "bytes", len(b))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="wage-pack-%s-%s.json"`, rep.Period, worker[:16]))
	_, _ = w.Write(b)
}
