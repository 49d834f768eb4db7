package portal

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/edgeanchor/edgeanchor/audit"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/portal/jobs"
)

// auditRuns keeps the last 50 audits, 2 running at once.
type auditRuns = jobs.Registry[audit.Options, []audit.Finding]

type auditJob = jobs.Job[audit.Options, []audit.Finding]

func newAudits() *auditRuns {
	return jobs.New(jobs.Limits{What: "audits", Keep: 50, Running: 2},
		func(ctx context.Context, o audit.Options, progress jobs.Progress) ([]audit.Finding, error) {
			o.Progress = func(done, total uint64) { progress("", done, total) }
			return audit.Run(ctx, o)
		})
}

type auditStatus struct {
	Done     uint64 `json:"done"`
	Total    uint64 `json:"total"`
	Finished bool   `json:"finished"`
}

func statusOf(j *auditJob) auditStatus {
	st := j.Status()
	return auditStatus{Done: st.Done, Total: st.Total, Finished: st.Finished}
}

type gatewayChoice struct {
	DID, Name, Site string
}

type auditFormView struct {
	Gateways []gatewayChoice
}

func (s *Server) auditPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, "audit", page{Title: "Audit a gateway", Nav: "audit", Data: s.auditForm(r.Context())})
}

func (s *Server) auditForm(ctx context.Context) auditFormView {
	var v auditFormView
	for _, g := range s.cfg.Gateways {
		c := gatewayChoice{DID: string(g.DID)}
		if gr, err := s.ledger.Gateway(ctx, g.DID); err == nil {
			c.Name, c.Site = gr.Name, gr.Site
		}
		v.Gateways = append(v.Gateways, c)
	}
	sort.Slice(v.Gateways, func(i, j int) bool {
		return v.Gateways[i].Site+v.Gateways[i].Name < v.Gateways[j].Site+v.Gateways[j].Name
	})
	return v
}

// formTime parses an <input type="datetime-local"> value as UTC (or
// RFC 3339); "" is the zero time.
func formTime(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{"2006-01-02T15:04", "2006-01-02T15:04:05", time.RFC3339} {
		if t, err := time.ParseInLocation(layout, v, time.UTC); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s %q: want a date and time (UTC)", name, v)
}

func (s *Server) auditPost(w http.ResponseWriter, r *http.Request) {
	fail := func(err error) {
		w.WriteHeader(http.StatusBadRequest)
		s.render(w, r, "audit", page{Title: "Audit a gateway", Nav: "audit", Err: err.Error(), Data: s.auditForm(r.Context())})
	}
	did, err := device.ParseDID(r.PostFormValue("gateway"))
	if err != nil {
		fail(fmt.Errorf("gateway: %w", err))
		return
	}
	api, ok := s.gateways[did]
	if !ok {
		fail(fmt.Errorf("gateway %s: no record API configured for it", did))
		return
	}
	from, err := formTime("from", r.PostFormValue("from"))
	if err != nil {
		fail(err)
		return
	}
	to, err := formTime("to", r.PostFormValue("to"))
	if err != nil {
		fail(err)
		return
	}
	if !from.IsZero() && !to.IsZero() && to.Before(from) {
		fail(fmt.Errorf("to %s is before from %s", to.Format(time.RFC3339), from.Format(time.RFC3339)))
		return
	}
	o := audit.Options{Gateway: did, Ledger: s.cfg.LedgerRPC, API: api, From: from, To: to}
	j, err := s.audits.Start(s.baseCtx(r), randomHex(12), o)
	if err != nil {
		w.WriteHeader(http.StatusTooManyRequests)
		s.render(w, r, "audit", page{Title: "Audit a gateway", Nav: "audit", Err: err.Error(), Data: s.auditForm(r.Context())})
		return
	}
	s.log.Info("portal audit started", "gateway", did, "id", j.ID)
	http.Redirect(w, r, "/audit/"+j.ID, http.StatusSeeOther)
}

type auditRunView struct {
	ID       string
	Gateway  string
	Period   string
	Status   auditStatus
	Findings []audit.Finding
	Err      string
	Took     string
}

// runOf returns the run of reg named by the request's {id}, or answers 404
// naming what (reg keeps only its last runs).
func runOf[P, R any](w http.ResponseWriter, r *http.Request, reg *jobs.Registry[P, R], what string) *jobs.Job[P, R] {
	j := reg.Get(r.PathValue("id"))
	if j == nil {
		http.Error(w, fmt.Sprintf("no such %s (the portal keeps the last %d)", what, reg.Keep()), http.StatusNotFound)
	}
	return j
}

// serveStatus answers a run's progress to its page's polling.
func serveStatus(w http.ResponseWriter, st any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(st)
}

func (s *Server) job(w http.ResponseWriter, r *http.Request) *auditJob {
	return runOf(w, r, s.audits, "audit")
}

func period(from, to time.Time) string {
	f, t := "batch 1", "the last batch"
	if !from.IsZero() {
		f = from.UTC().Format(time.RFC3339)
	}
	if !to.IsZero() {
		t = to.UTC().Format(time.RFC3339)
	}
	return f + " – " + t
}

func (s *Server) auditRunPage(w http.ResponseWriter, r *http.Request) {
	j := s.job(w, r)
	if j == nil {
		return
	}
	o := j.Outcome()
	v := auditRunView{ID: j.ID, Gateway: string(j.Params.Gateway), Period: period(j.Params.From, j.Params.To),
		Status: auditStatus{Done: o.Done, Total: o.Total, Finished: o.Finished}, Findings: o.Result}
	if o.Err != nil {
		v.Err = o.Err.Error()
	}
	if o.Finished {
		v.Took = o.Took.Round(time.Millisecond).String()
	}
	s.render(w, r, "auditrun", page{Title: "Audit", Nav: "audit", Data: v})
}

func (s *Server) auditStatus(w http.ResponseWriter, r *http.Request) {
	if j := s.job(w, r); j != nil {
		serveStatus(w, statusOf(j))
	}
}

// auditReport is the downloadable report.
type auditReport struct {
	Gateway  device.DID      `json:"gateway"`
	From     *time.Time      `json:"from,omitempty"`
	To       *time.Time      `json:"to,omitempty"`
	Started  time.Time       `json:"started"`
	Ended    time.Time       `json:"ended"`
	Batches  uint64          `json:"batches"`
	Error    string          `json:"error,omitempty"`
	Findings []audit.Finding `json:"findings"`
}

func (s *Server) report(w http.ResponseWriter, r *http.Request) *auditReport {
	j := s.job(w, r)
	if j == nil {
		return nil
	}
	o, p := j.Outcome(), j.Params
	if !o.Finished {
		http.Error(w, "the audit is still running", http.StatusConflict)
		return nil
	}
	rep := &auditReport{Gateway: p.Gateway, Started: j.Started.UTC(), Ended: o.Ended.UTC(), Batches: o.Total, Findings: o.Result}
	if rep.Findings == nil {
		rep.Findings = []audit.Finding{}
	}
	if !p.From.IsZero() {
		rep.From = &p.From
	}
	if !p.To.IsZero() {
		rep.To = &p.To
	}
	if o.Err != nil {
		rep.Error = o.Err.Error()
	}
	return rep
}

func (s *Server) auditJSON(w http.ResponseWriter, r *http.Request) {
	rep := s.report(w, r)
	if rep == nil {
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="audit-%s.json"`, r.PathValue("id")))
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(rep)
}

func (s *Server) auditCSV(w http.ResponseWriter, r *http.Request) {
	rep := s.report(w, r)
	if rep == nil {
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="audit-%s.csv"`, r.PathValue("id")))
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"gateway", "kind", "detail"})
	for _, f := range rep.Findings {
		// A leading =, +, - or @ would be a formula to a spreadsheet.
		_ = cw.Write([]string{string(rep.Gateway), csvCell(f.Kind), csvCell(f.Detail)})
	}
	if rep.Error != "" {
		_ = cw.Write([]string{string(rep.Gateway), "error", csvCell(rep.Error)})
	}
	cw.Flush()
}

func csvCell(s string) string {
	if s != "" && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@') {
		return "'" + s
	}
	return s
}
