package portal

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/portal/svgchart"
)

// Bounds of what one Charts page reads.
const (
	chartBatches = 48   // latest batches for latency and records
	chartRecords = 2000 // records for records-per-hour
	chartBlocks  = 100  // latest blocks
)

type chartsView struct {
	Gateways []gatewayChoice
	DID      string
	Charts   []svgchart.Chart
	Problems []string
}

// chartsPage draws, for one gateway, records per hour by kind and
// anchoring latency, its refusals by reason, and the ledger's blocks and
// transactions.
func (s *Server) chartsPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	v := chartsView{Gateways: s.auditForm(ctx).Gateways}
	did := device.DID(r.URL.Query().Get("did"))
	if did == "" && len(v.Gateways) > 0 {
		did = device.DID(v.Gateways[0].DID)
	}
	p := page{Title: "Charts", Nav: "charts"}
	if did != "" {
		if _, err := device.ParseDID(string(did)); err != nil {
			p.Err = "gateway: " + err.Error()
			w.WriteHeader(http.StatusBadRequest)
			p.Data = v
			s.render(w, r, "charts", p)
			return
		}
		v.DID = string(did)
		rec, lat, err := s.gatewayCharts(ctx, did)
		if err != nil {
			v.Problems = append(v.Problems, err.Error())
		}
		v.Charts = append(v.Charts, rec, lat)
		ref, err := s.refusalChart(ctx, did)
		if err != nil {
			v.Problems = append(v.Problems, err.Error())
		}
		v.Charts = append(v.Charts, ref)
	}
	blocks, err := s.blockCharts(ctx)
	if err != nil {
		v.Problems = append(v.Problems, err.Error())
	}
	v.Charts = append(v.Charts, blocks...)
	p.Data = v
	s.render(w, r, "charts", p)
}

// gatewayCharts reads the gateway's latest batches from the ledger and
// their records from its API (bounded by chartBatches and chartRecords).
func (s *Server) gatewayCharts(ctx context.Context, did device.DID) (svgchart.Chart, svgchart.Chart, error) {
	const recTitle, latTitle = "Records per hour by kind (latest batches)", "Anchoring latency in seconds: end of the batch window to the commit of its block (latest batches)"
	emptyRec := svgchart.Bars("records", recTitle, "records", nil, nil, "No records.")
	emptyLat := svgchart.Bars("latency", latTitle, "s", []string{"latency"}, nil, "No batches anchored.")
	last, err := s.ledger.LastBatch(ctx, did)
	if errors.Is(err, ledgerclient.ErrNotFound) {
		return emptyRec, emptyLat, nil
	}
	if err != nil {
		return emptyRec, emptyLat, fmt.Errorf("gateway %s: last batch: %w", did, err)
	}
	cli, err := s.rpc()
	if err != nil {
		return emptyRec, emptyLat, err
	}
	var lat []svgchart.Column
	type hourKind struct {
		hour time.Time
		kind string
	}
	counts := map[hourKind]float64{}
	kinds := map[string]bool{}
	records := 0
	var recErr error
	for seq := last.Seq; seq > 0 && seq+chartBatches > last.Seq; seq-- {
		br, err := s.ledger.Batch(ctx, did, seq)
		if err != nil {
			continue
		}
		h, err := anchor.ParseHeader(br.Header)
		if err != nil {
			continue
		}
		if t, ok := anchoredBy(ctx, cli, br.Height); ok {
			lat = append(lat, svgchart.Column{Label: fmt.Sprint(seq), Values: []float64{math.Max(0, t.Sub(h.To).Seconds())}})
		}
		if _, ok := s.gateways[did]; !ok || records >= chartRecords || recErr != nil {
			continue
		}
		to := min(h.Last, h.First+uint64(chartRecords-records)-1)
		for from := h.First; from <= to && recErr == nil; from += 500 {
			ans, err := s.records(ctx, did, from, min(to, from+499))
			if err != nil {
				recErr = err
				break
			}
			for _, rr := range ans.Records {
				t, err := anchor.ParseTime(rr.Recv)
				if err != nil {
					t = h.To
				}
				k := hourKind{t.UTC().Truncate(time.Hour), rr.Kind}
				counts[k]++
				kinds[rr.Kind] = true
				records++
			}
		}
	}
	// Oldest first.
	for i, j := 0, len(lat)-1; i < j; i, j = i+1, j-1 {
		lat[i], lat[j] = lat[j], lat[i]
	}
	latChart := svgchart.Bars("latency", latTitle, "s", []string{"latency"}, lat, "No batches anchored.")
	var kindList []string
	for k := range kinds {
		kindList = append(kindList, k)
	}
	sort.Strings(kindList)
	var hours []time.Time
	seen := map[time.Time]bool{}
	for k := range counts {
		if !seen[k.hour] {
			seen[k.hour] = true
			hours = append(hours, k.hour)
		}
	}
	sort.Slice(hours, func(i, j int) bool { return hours[i].Before(hours[j]) })
	var cols []svgchart.Column
	for _, h := range hours {
		col := svgchart.Column{Label: h.Format("01-02 15h")}
		for _, k := range kindList {
			col.Values = append(col.Values, counts[hourKind{h, k}])
		}
		cols = append(cols, col)
	}
	recChart := svgchart.Bars("records", recTitle, "records", kindList, cols, "No records (or no record API configured for this gateway).")
	return recChart, latChart, recErr
}

// refusalChart reads the gateway's refusal counters from its /metrics.
func (s *Server) refusalChart(ctx context.Context, did device.DID) (svgchart.Chart, error) {
	const title = "Publishes refused by the gateway, by reason (since it started)"
	base, ok := s.gateways[did]
	if !ok {
		return svgchart.Bars("refusals", title, "refused", nil, nil, "No record API configured for this gateway."), nil
	}
	body, err := s.get(ctx, base+"/metrics", 8<<20)
	if err != nil {
		return svgchart.Bars("refusals", title, "refused", nil, nil, "The gateway's metrics could not be read."), err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return svgchart.Bars("refusals", title, "refused", nil, nil, "The gateway's metrics could not be read."), fmt.Errorf("gateway metrics: %w", err)
	}
	byReason := map[string]float64{}
	if f := fams["edgeanchor_messages_refused_total"]; f != nil {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" {
					byReason[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	var reasons []string
	for r := range byReason {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	var cols []svgchart.Column
	total := 0.0
	for _, r := range reasons {
		cols = append(cols, svgchart.Column{Label: r, Values: []float64{byReason[r]}})
		total += byReason[r]
	}
	if total == 0 {
		return svgchart.Bars("refusals", title, "refused", nil, nil, "No publish refused since the gateway started."), nil
	}
	return svgchart.Bars("refusals", title, "refused", []string{"refused"}, cols, ""), nil
}

// blockCharts reads the ledger's latest blocks: transactions per block and
// seconds between blocks.
func (s *Server) blockCharts(ctx context.Context) ([]svgchart.Chart, error) {
	const txTitle, dtTitle = "Ledger: transactions per block (latest blocks)", "Ledger: seconds between blocks (latest blocks)"
	st, err := s.ledger.Status(ctx)
	if err != nil {
		return []svgchart.Chart{svgchart.Bars("txs", txTitle, "txs", nil, nil, "The ledger did not answer.")}, err
	}
	cli, err := s.rpc()
	if err != nil {
		return nil, err
	}
	var tx, dt []svgchart.Column
	var prev time.Time
	for lo := max(1, st.Height-chartBlocks+1); lo <= st.Height; lo += 20 {
		bi, err := cli.BlockchainInfo(ctx, lo, min(st.Height, lo+19))
		if err != nil {
			return nil, err
		}
		metas := bi.BlockMetas
		sort.Slice(metas, func(i, j int) bool { return metas[i].Header.Height < metas[j].Header.Height })
		for _, m := range metas {
			label := fmt.Sprint(m.Header.Height)
			tx = append(tx, svgchart.Column{Label: label, Values: []float64{float64(m.NumTxs)}})
			if !prev.IsZero() {
				dt = append(dt, svgchart.Column{Label: label, Values: []float64{m.Header.Time.Sub(prev).Seconds()}})
			}
			prev = m.Header.Time
		}
	}
	return []svgchart.Chart{
		svgchart.Bars("txs", txTitle, "txs", []string{"transactions"}, tx, "No blocks."),
		svgchart.Bars("blocktime", dtTitle, "s", []string{"interval"}, dt, "No blocks."),
	}, nil
}
