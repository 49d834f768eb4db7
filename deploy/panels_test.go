package deploy

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
	ledgerapp "github.com/edgeanchor/edgeanchor/ledger/app"
)

// fieldConfig is the part of a panel's fieldConfig that sets units.
type fieldConfig struct {
	Defaults struct {
		Unit string `json:"unit"`
	} `json:"defaults"`
	Overrides []struct {
		Matcher struct {
			ID      string `json:"id"`
			Options any    `json:"options"`
		} `json:"matcher"`
		Properties []struct {
			ID    string `json:"id"`
			Value any    `json:"value"`
		} `json:"properties"`
	} `json:"overrides"`
}

// targetUnit is the unit Grafana shows a query of p in: an override that
// matches the query's refId, else the panel's default.
func targetUnit(p panel, refID string) (string, error) {
	var fc fieldConfig
	if len(p.FieldConfig) > 0 {
		if err := json.Unmarshal(p.FieldConfig, &fc); err != nil {
			return "", err
		}
	}
	unit := fc.Defaults.Unit
	for _, o := range fc.Overrides {
		if o.Matcher.ID != "byFrameRefID" || o.Matcher.Options != refID {
			continue
		}
		for _, pr := range o.Properties {
			if u, ok := pr.Value.(string); ok && pr.ID == "unit" {
				unit = u
			}
		}
	}
	return unit, nil
}

// wantUnit says which unit a query's metric names call for: a _bytes gauge
// is shown in bytes, a _seconds gauge or histogram (quantile or sum) in
// seconds; a query of counters only (rates of events) must not be shown in
// bytes or seconds. "" means no rule applies.
func wantUnit(names []string) (want string, notTimeOrBytes bool) {
	counters := len(names) > 0
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_sum")
		switch {
		case strings.HasSuffix(base, "_bytes"):
			return "bytes", false
		case strings.HasSuffix(base, "_seconds"):
			return "s", false
		}
		if !strings.HasSuffix(n, "_total") {
			counters = false
		}
	}
	return "", counters
}

// TestDashboardPanelUnits: every query is shown in the unit its metric
// calls for (memory in bytes, latencies in seconds, rates of counters in
// neither), taking per-query overrides into account.
func TestDashboardPanelUnits(t *testing.T) {
	checked := 0
	dashes := loadDashboards(t)
	for _, file := range sortedKeys(dashes) {
		var walk func(ps []panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				for _, tg := range p.Targets {
					unit, err := targetUnit(p, tg.RefID)
					if err != nil {
						t.Errorf("%s: panel %d %q: fieldConfig: %v", file, p.ID, p.Title, err)
						continue
					}
					want, notTimeOrBytes := wantUnit(promqlMetricNames(tg.Expr))
					switch {
					case want == "bytes" && unit != "bytes" && unit != "decbytes":
						t.Errorf("%s: panel %d %q query %s is in bytes, shown with unit %q", file, p.ID, p.Title, tg.RefID, unit)
					case want == "s" && unit != "s":
						t.Errorf("%s: panel %d %q query %s is in seconds, shown with unit %q", file, p.ID, p.Title, tg.RefID, unit)
					case notTimeOrBytes && (unit == "s" || unit == "ms" || unit == "bytes" || unit == "decbytes"):
						t.Errorf("%s: panel %d %q query %s counts events, shown with unit %q", file, p.ID, p.Title, tg.RefID, unit)
					}
					checked++
				}
				walk(p.Panels)
			}
		}
		walk(dashes[file].Panels)
	}
	if checked < 20 {
		t.Fatalf("checked %d queries: the walk is broken", checked)
	}

	// The check is not blind: a memory query in "short" is caught.
	p := panel{FieldConfig: json.RawMessage(`{"defaults":{"unit":"short"},"overrides":[{"matcher":{"id":"byFrameRefID","options":"B"},"properties":[{"id":"unit","value":"bytes"}]}]}`)}
	if u, _ := targetUnit(p, "A"); u != "short" {
		t.Errorf("targetUnit A = %q", u)
	}
	if u, _ := targetUnit(p, "B"); u != "bytes" {
		t.Errorf("targetUnit B = %q, want the override", u)
	}
	if w, _ := wantUnit([]string{"process_resident_memory_bytes"}); w != "bytes" {
		t.Errorf("wantUnit(process_resident_memory_bytes) = %q", w)
	}
}

// TestDashboardSeriesExistAtStart: on a gateway and a ledger that have seen
// no event yet (a healthy, quiet site), every edgeanchor metric a dashboard
// panel or an alert reads already has a series, so the refusal and error
// panels show 0 rather than "No data". The known label values of each
// labelled counter are there at 0.
func TestDashboardSeriesExistAtStart(t *testing.T) {
	st := liveStack(t)

	// A fresh gateway (no device ever connected) on the live ledger, and a
	// fresh ledger application's metrics.
	reg := prometheus.NewRegistry()
	cfg := gateway.DefaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.LedgerRPC = st.ledgerRPC
	cfg.MQTT = gateway.MQTTConfig{TCP: "127.0.0.1:0"}
	cfg.HTTP.Addr = "127.0.0.1:0"
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	client, err := ledgerclient.NewClient(cfg.LedgerRPC, ledgerclient.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	g, err := gateway.New(cfg, gateway.Deps{Registerer: reg, Gatherer: reg, Signer: device.NewKeySigner(priv), Ledger: client})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	ledgerReg := prometheus.NewRegistry()
	if _, err := ledgerapp.NewMetrics(ledgerReg); err != nil {
		t.Fatal(err)
	}

	series := map[string]map[string]bool{} // family → label pairs of each series
	for _, gat := range []prometheus.Gatherer{reg, ledgerReg} {
		mfs, err := gat.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			s := map[string]bool{}
			for _, m := range mf.GetMetric() {
				var kv []string
				for _, lp := range m.GetLabel() {
					kv = append(kv, lp.GetName()+"="+lp.GetValue())
				}
				s[strings.Join(kv, ",")] = true
			}
			series[mf.GetName()] = s
		}
	}

	// Appear only with an event that names them: the gateway DID of an
	// anchor (the consortium panel shows anchors that happened).
	later := map[string]string{
		"edgeanchor_ledger_anchors_total": "labelled by the anchoring gateway's DID",
	}
	var exprs []dashExpr
	exprs = append(exprs, dashboardExprs(t)...)
	var rf ruleFile
	readYAML(t, promDir(t)+"/alerts.yml", &rf)
	for _, gr := range rf.Groups {
		for _, r := range gr.Rules {
			exprs = append(exprs, dashExpr{"alert " + r.Alert, r.Expr})
		}
	}
	checked := map[string]bool{}
	for _, e := range exprs {
		expr := e.expr
		if sel, ok := labelValuesSelector(expr); ok {
			expr = sel
		}
		for _, n := range promqlMetricNames(expr) {
			if !strings.HasPrefix(n, "edgeanchor_") || later[n] != "" || checked[n] {
				continue
			}
			checked[n] = true
			fam := n
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if _, ok := series[fam]; !ok {
					fam = strings.TrimSuffix(fam, suf)
				}
			}
			if len(series[fam]) == 0 {
				t.Errorf("%s: %s has no series before its first event: the panel shows \"No data\" on a quiet site", e.where, n)
			}
		}
	}
	if len(checked) < 15 {
		t.Fatalf("checked %d metrics: the walk is broken", len(checked))
	}

	// The known label values, each at 0.
	for fam, want := range map[string][]string{
		"edgeanchor_messages_refused_total": {"kind=,reason=rate_limited", "kind=,reason=signature", "kind=,reason=replay",
			"kind=,reason=foreign_topic", "kind=,reason=too_large", "kind=,reason=malformed", "kind=,reason=kind_not_allowed"},
		"edgeanchor_auth_failures_total":        {"reason=bad_signature", "reason=unknown_device", "reason=bad_password"},
		"edgeanchor_enrollments_total":          {"result=ok", "result=token_unknown", "result=token_used", "result=ledger_unavailable"},
		"edgeanchor_ledger_submit_errors_total": {"kind=unreachable", "kind=refused", "kind=timeout", "kind=chain"},
		"edgeanchor_messages_accepted_total":    {"kind=payroll.attendance", "kind=env.dust"},
		"edgeanchor_ledger_refused_total":       {"code=sequence_gap", "code=bad_signature", "code=not_member"},
	} {
		for _, w := range want {
			if !series[fam][w] {
				t.Errorf("%s{%s} is not there at 0 before the first event (series: %v)", fam, w, keys(series[fam]))
			}
		}
	}
}

func keys(m map[string]bool) string { return fmt.Sprint(sortedKeys(m)) }
