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
)

// Bounds of what one Charts page reads.
const (
	chartBatches = 48   // latest batches for latency and records
	chartRecords = 2000 // records for records-per-hour
	chartBlocks  = 100  // latest blocks
)

// Chart geometry (SVG user units).
const (
	chartW, chartH         = 900.0, 220.0
	padL, padR, padT, padB = 50.0, 10.0, 10.0, 40.0
)

// chart is a server-rendered SVG bar chart: stacked bars per column.
type chart struct {
	ID, Title, Unit string
	W, H            float64
	Bars            []svgBar
	YTicks          []svgTick
	XTicks          []svgTick
	Legend          []legendItem
	Empty           string
}

type svgBar struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

type svgTick struct {
	X, Y  float64
	Label string
}

type legendItem struct{ Class, Name string }

// column is one x position: its label and one value per series.
type column struct {
	Label  string
	Values []float64
}

func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// barChart lays out stacked bars for cols (series named by series).
func barChart(id, title, unit string, series []string, cols []column, empty string) chart {
	c := chart{ID: id, Title: title, Unit: unit, W: chartW, H: chartH}
	for i, s := range series {
		c.Legend = append(c.Legend, legendItem{Class: fmt.Sprintf("c%d", i%6), Name: s})
	}
	if len(cols) == 0 {
		c.Empty = empty
		return c
	}
	top := 0.0
	for _, col := range cols {
		sum := 0.0
		for _, v := range col.Values {
			sum += v
		}
		top = max(top, sum)
	}
	top = niceMax(top)
	plotW, plotH := chartW-padL-padR, chartH-padT-padB
	step := plotW / float64(len(cols))
	bw := max(step*0.8, 1)
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		c.YTicks = append(c.YTicks, svgTick{X: padL - 4, Y: padT + plotH - plotH*float64(i)/4, Label: trimFloat(v)})
	}
	every := max(1, len(cols)/8)
	for i, col := range cols {
		x := padL + float64(i)*step + (step-bw)/2
		y := padT + plotH
		for k, v := range col.Values {
			if v <= 0 {
				continue
			}
			h := plotH * v / top
			y -= h
			c.Bars = append(c.Bars, svgBar{X: x, Y: y, W: bw, H: h, Class: fmt.Sprintf("c%d", k%6),
				Title: fmt.Sprintf("%s · %s: %s %s", col.Label, series[k], trimFloat(v), unit)})
		}
		if i%every == 0 {
			c.XTicks = append(c.XTicks, svgTick{X: x + bw/2, Y: chartH - padB + 14, Label: col.Label})
		}
	}
	return c
}

func trimFloat(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}

type chartsView struct {
	Gateways []gatewayChoice
	DID      string
	Charts   []chart
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
func (s *Server) gatewayCharts(ctx context.Context, did device.DID) (chart, chart, error) {
	const recTitle, latTitle = "Records per hour by kind (latest batches)", "Anchoring latency in seconds: end of the batch window to the commit of its block (latest batches)"
	emptyRec := barChart("records", recTitle, "records", nil, nil, "No records.")
	emptyLat := barChart("latency", latTitle, "s", []string{"latency"}, nil, "No batches anchored.")
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
	var lat []column
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
			lat = append(lat, column{Label: fmt.Sprint(seq), Values: []float64{math.Max(0, t.Sub(h.To).Seconds())}})
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
	latChart := barChart("latency", latTitle, "s", []string{"latency"}, lat, "No batches anchored.")
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
	var cols []column
	for _, h := range hours {
		col := column{Label: h.Format("01-02 15h")}
		for _, k := range kindList {
			col.Values = append(col.Values, counts[hourKind{h, k}])
		}
		cols = append(cols, col)
	}
	recChart := barChart("records", recTitle, "records", kindList, cols, "No records (or no record API configured for this gateway).")
	return recChart, latChart, recErr
}

// refusalChart reads the gateway's refusal counters from its /metrics.
func (s *Server) refusalChart(ctx context.Context, did device.DID) (chart, error) {
	const title = "Publishes refused by the gateway, by reason (since it started)"
	base, ok := s.gateways[did]
	if !ok {
		return barChart("refusals", title, "refused", nil, nil, "No record API configured for this gateway."), nil
	}
	body, err := s.get(ctx, base+"/metrics", 8<<20)
	if err != nil {
		return barChart("refusals", title, "refused", nil, nil, "The gateway's metrics could not be read."), err
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		return barChart("refusals", title, "refused", nil, nil, "The gateway's metrics could not be read."), fmt.Errorf("gateway metrics: %w", err)
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
	var cols []column
	total := 0.0
	for _, r := range reasons {
		cols = append(cols, column{Label: r, Values: []float64{byReason[r]}})
		total += byReason[r]
	}
	if total == 0 {
		return barChart("refusals", title, "refused", nil, nil, "No publish refused since the gateway started."), nil
	}
	return barChart("refusals", title, "refused", []string{"refused"}, cols, ""), nil
}

// blockCharts reads the ledger's latest blocks: transactions per block and
// seconds between blocks.
func (s *Server) blockCharts(ctx context.Context) ([]chart, error) {
	const txTitle, dtTitle = "Ledger: transactions per block (latest blocks)", "Ledger: seconds between blocks (latest blocks)"
	st, err := s.ledger.Status(ctx)
	if err != nil {
		return []chart{barChart("txs", txTitle, "txs", nil, nil, "The ledger did not answer.")}, err
	}
	cli, err := s.rpc()
	if err != nil {
		return nil, err
	}
	var tx, dt []column
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
			tx = append(tx, column{Label: label, Values: []float64{float64(m.NumTxs)}})
			if !prev.IsZero() {
				dt = append(dt, column{Label: label, Values: []float64{m.Header.Time.Sub(prev).Seconds()}})
			}
			prev = m.Header.Time
		}
	}
	return []chart{
		barChart("txs", txTitle, "txs", []string{"transactions"}, tx, "No blocks."),
		barChart("blocktime", dtTitle, "s", []string{"interval"}, dt, "No blocks."),
	}, nil
}
