package httpapi

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// Options are what Routes serves.
type Options struct {
	Store    *store.Store
	Health   *Health             // behind /readyz
	Gatherer prometheus.Gatherer // served at /metrics
	MaxPage  int                 // the most records of one device page (http.max_page)
	Log      *slog.Logger
}

// api serves the routes of Routes.
type api struct {
	store  *store.Store
	health *Health
	page   int
	log    *slog.Logger
}

// Routes mounts the HTTP API on mux:
//
//	GET /healthz                                    200 while the process serves
//	GET /readyz                                     from the background checks (health.go): 503 when a
//	                                                critical part fails, 200 "ready" or "degraded"
//	GET /metrics                                    Prometheus
//	GET /v1/records/{gseq}                          one record (RecordView)
//	GET /v1/devices/{did}/records?from_seq=&to_seq=&limit=
//	                                                a page of a device's records in seq order
//
// The proof routes are ProofAPI's.
func Routes(mux *http.ServeMux, o Options) {
	g := &api{store: o.Store, health: o.Health, page: o.MaxPage, log: o.Log}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", g.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{ErrorLog: nil}))
	mux.HandleFunc("GET /v1/records/{gseq}", g.getRecord)
	mux.HandleFunc("GET /v1/devices/{did}/records", g.deviceRecords)
}

// readyz answers from the last background check results (health.go), so
// it never waits for a slow part: {"status":"ready|degraded|not_ready",
// "<check>":"ok" or what is wrong, ...}.
func (g *api) readyz(w http.ResponseWriter, _ *http.Request) {
	rep := g.health.Report(time.Now())
	body := make(map[string]string, len(rep.Parts)+1)
	for k, v := range rep.Parts {
		body[k] = v
	}
	body["status"] = rep.Status
	writeJSON(w, rep.Code(), body)
}

type apiError struct {
	Error string `json:"error"`
}

func (g *api) getRecord(w http.ResponseWriter, r *http.Request) {
	gseq, err := strconv.ParseUint(r.PathValue("gseq"), 10, 64)
	if err != nil || gseq == 0 {
		writeJSON(w, http.StatusBadRequest, apiError{"gseq must be a positive integer"})
		return
	}
	rec, err := g.store.Get(gseq)
	if errors.Is(err, store.ErrNotFound) {
		writeJSON(w, http.StatusNotFound, apiError{"no record with that gseq"})
		return
	}
	if err != nil {
		g.log.Error("read record failed", "gseq", gseq, "error", err)
		writeJSON(w, http.StatusInternalServerError, apiError{"store error"})
		return
	}
	view, err := ViewRecord(rec)
	if err != nil {
		g.log.Error("read record failed", "gseq", gseq, "error", err)
		writeJSON(w, http.StatusInternalServerError, apiError{"store error"})
		return
	}
	writeJSON(w, http.StatusOK, view)
}

// DeviceRecordsPage is the answer of /v1/devices/{did}/records. NextFromSeq
// is set when more records may follow: ask again with from_seq=NextFromSeq.
type DeviceRecordsPage struct {
	DID         device.DID   `json:"did"`
	Records     []RecordView `json:"records"`
	NextFromSeq uint64       `json:"next_from_seq,omitempty"`
}

func (g *api) deviceRecords(w http.ResponseWriter, r *http.Request) {
	did, err := device.ParseDID(r.PathValue("did"))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{err.Error()})
		return
	}
	q := r.URL.Query()
	num := func(name string, def uint64) (uint64, bool) {
		v := q.Get(name)
		if v == "" {
			return def, true
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{name + " must be a non-negative integer"})
			return 0, false
		}
		return n, true
	}
	from, ok := num("from_seq", 1)
	if !ok {
		return
	}
	to, ok := num("to_seq", ^uint64(0))
	if !ok {
		return
	}
	limit, ok := num("limit", uint64(g.page))
	if !ok {
		return
	}
	if from > to {
		writeJSON(w, http.StatusBadRequest, apiError{"from_seq must not exceed to_seq"})
		return
	}
	limit = max(1, min(limit, uint64(g.page)))
	recs, err := g.store.DeviceRecords(did, from, to, int(limit))
	if err != nil {
		g.log.Error("read device records failed", "did", did, "error", err)
		writeJSON(w, http.StatusInternalServerError, apiError{"store error"})
		return
	}
	page := DeviceRecordsPage{DID: did, Records: make([]RecordView, 0, len(recs))}
	for _, rec := range recs {
		v, err := ViewRecord(rec)
		if err != nil {
			g.log.Error("read device records failed", "did", did, "error", err)
			writeJSON(w, http.StatusInternalServerError, apiError{"store error"})
			return
		}
		page.Records = append(page.Records, v)
	}
	if uint64(len(recs)) == limit && len(recs) > 0 {
		if last := recs[len(recs)-1].Seq; last < to {
			page.NextFromSeq = last + 1
		}
	}
	writeJSON(w, http.StatusOK, page)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
