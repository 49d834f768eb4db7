package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// promqlKeywords are the identifiers of PromQL that are not metric names when
// they are not followed by "(": aggregation operators (which may be followed by
// by/without), binary operators and modifiers.
var promqlKeywords = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true,
	"stdvar": true, "count": true, "count_values": true, "bottomk": true, "topk": true,
	"quantile": true, "by": true, "without": true, "on": true, "ignoring": true,
	"group_left": true, "group_right": true, "bool": true, "offset": true, "and": true,
	"or": true, "unless": true, "atan2": true, "inf": true, "nan": true,
}

// labelListers are followed by a parenthesised list of label names.
var labelListers = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// grafanaVars replaces the Grafana variables the dashboards use with values
// that make the expression plain PromQL.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h",
	"$site", ".*", "$instance", ".*", "$chain", ".*",
)

// expandGrafana returns expr as plain PromQL, or an error if a Grafana
// variable is left.
func expandGrafana(expr string) (string, error) {
	out := grafanaVars.Replace(expr)
	if i := strings.IndexByte(out, '$'); i >= 0 {
		return "", fmt.Errorf("unknown Grafana variable at %q", out[i:])
	}
	return out, nil
}

// promqlMetricNames returns the metric names an expression selects, sorted:
// identifiers outside strings, label matchers, ranges and label lists that are
// neither functions (followed by "(") nor keywords. It is a lexer, not a
// parser: each expression is also checked by promtool and by the real
// Prometheus server in the other tests.
func promqlMetricNames(expr string) []string {
	names := map[string]bool{}
	isStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isPart := func(c byte) bool { return isStart(c) || c >= '0' && c <= '9' }
	closingQuote := func(i int) int { // i at a quote; returns the index of the matching one (or len(expr))
		q := expr[i]
		j := i + 1
		for j < len(expr) && expr[j] != q {
			if expr[j] == '\\' && q != '`' {
				j++
			}
			j++
		}
		return j
	}
	skipTo := func(i int, open, close byte) int { // i at open; returns index after the matching close
		depth := 0
		for ; i < len(expr); i++ {
			switch c := expr[i]; {
			case c == '"' || c == '\'' || c == '`':
				i = closingQuote(i)
			case c == open:
				depth++
			case c == close:
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	nextNonSpace := func(i int) int {
		for i < len(expr) && (expr[i] == ' ' || expr[i] == '\t' || expr[i] == '\n') {
			i++
		}
		return i
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			i = closingQuote(i) + 1
		case c == '{':
			i = skipTo(i, '{', '}')
		case c == '[':
			i = skipTo(i, '[', ']')
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (isPart(expr[i]) || expr[i] == '.') {
				i++
			}
		case c == '#':
			for i < len(expr) && expr[i] != '\n' {
				i++
			}
		case isStart(c):
			j := i
			for j < len(expr) && isPart(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := nextNonSpace(j)
			switch {
			case labelListers[word] && k < len(expr) && expr[k] == '(':
				j = skipTo(k, '(', ')')
			case k < len(expr) && expr[k] == '(':
				// a function or an aggregation
			case promqlKeywords[strings.ToLower(word)]:
			default:
				names[word] = true
			}
			i = j
		default:
			i++
		}
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func TestPromqlMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`up{job="edgeanchor-gateway"} == 0`, []string{"up"}},
		{`sum by (reason, kind) (rate(edgeanchor_messages_refused_total{job="x", site=~"a|b"}[5m]))`, []string{"edgeanchor_messages_refused_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(edgeanchor_ingest_latency_seconds_bucket[1m])))`, []string{"edgeanchor_ingest_latency_seconds_bucket"}},
		{`a_total / on (instance) group_left (site) b_info > 1e9 and c offset 5m`, []string{"a_total", "b_info", "c"}},
		{`predict_linear(edgeanchor_store_disk_free_bytes[1h], 4 * 3600) < 0`, []string{"edgeanchor_store_disk_free_bytes"}},
		{`max without (org) (x{l="sum(y)"}) unless bool z`, []string{"x", "z"}},
	}
	for _, tc := range tests {
		if got := promqlMetricNames(tc.expr); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("promqlMetricNames(%q) = %v, want %v", tc.expr, got, tc.want)
		}
	}
	// A Grafana variable query: the selector, not the label, is what it reads.
	sel, ok := labelValuesSelector(`label_values(cometbft_consensus_height{job="edgeanchor-ledger", x=~"a,b"}, chain_id)`)
	if got := promqlMetricNames(sel); !ok || !reflect.DeepEqual(got, []string{"cometbft_consensus_height"}) {
		t.Errorf("label_values selector %q: names %v", sel, got)
	}
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string          `json:"name"`
			Datasource json.RawMessage `json:"datasource"`
			Query      json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int             `json:"id"`
	Type       string          `json:"type"`
	Title      string          `json:"title"`
	Datasource *datasourceRef  `json:"datasource"`
	Targets    []panelTarget   `json:"targets"`
	Panels     []panel         `json:"panels"`
	GridPos    json.RawMessage `json:"gridPos"`
	// FieldConfig holds the panel's unit and per-query overrides.
	FieldConfig json.RawMessage `json:"fieldConfig"`
}

type panelTarget struct {
	Expr       string         `json:"expr"`
	RefID      string         `json:"refId"`
	Datasource *datasourceRef `json:"datasource"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// dashExpr is one PromQL expression of a dashboard, with where it comes from.
type dashExpr struct {
	where string // "site.json: panel 3 \"Messages\" A"
	expr  string // as written, with Grafana variables
}

// loadDashboards parses every dashboard JSON in deploy/grafana/dashboards and
// returns them by file name.
func loadDashboards(t testing.TB) map[string]dashboard {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(deployDir(t), "grafana", "dashboards", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]dashboard{}
	for _, f := range files {
		var d dashboard
		if err := json.Unmarshal([]byte(readFile(t, f)), &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out[filepath.Base(f)] = d
	}
	return out
}

// dashboardExprs returns every PromQL expression of every dashboard: panel
// targets (rows included) and template variable queries (label_values(...)).
func dashboardExprs(t testing.TB) []dashExpr {
	t.Helper()
	var out []dashExpr
	var walk func(file string, ps []panel)
	walk = func(file string, ps []panel) {
		for _, p := range ps {
			for _, tg := range p.Targets {
				out = append(out, dashExpr{fmt.Sprintf("%s: panel %d %q %s", file, p.ID, p.Title, tg.RefID), tg.Expr})
			}
			walk(file, p.Panels)
		}
	}
	dashes := loadDashboards(t)
	for _, file := range sortedKeys(dashes) {
		d := dashes[file]
		walk(file, d.Panels)
		for _, v := range d.Templating.List {
			var q struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &q); err != nil {
				t.Fatalf("%s: variable %s: query: %v", file, v.Name, err)
			}
			out = append(out, dashExpr{fmt.Sprintf("%s: variable %s", file, v.Name), q.Query})
		}
	}
	return out
}

// TestDashboardsStructure: the dashboards have unique uids and panel ids,
// every panel with queries uses the provisioned Prometheus datasource, and
// the provisioning files point where compose mounts the dashboards.
func TestDashboardsStructure(t *testing.T) {
	dashes := loadDashboards(t)
	for _, want := range []string{"site.json", "consortium.json"} {
		if _, ok := dashes[want]; !ok {
			t.Errorf("deploy/grafana/dashboards/%s is missing", want)
		}
	}
	uids := map[string]string{}
	for file, d := range dashes {
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: uid and title are required", file)
		}
		if other, dup := uids[d.UID]; dup {
			t.Errorf("%s and %s share uid %q", file, other, d.UID)
		}
		uids[d.UID] = file
		ids := map[int]bool{}
		queries := 0
		var walk func(ps []panel)
		walk = func(ps []panel) {
			for _, p := range ps {
				if ids[p.ID] {
					t.Errorf("%s: panel id %d used twice", file, p.ID)
				}
				ids[p.ID] = true
				if len(p.GridPos) == 0 {
					t.Errorf("%s: panel %d %q has no gridPos", file, p.ID, p.Title)
				}
				for _, tg := range p.Targets {
					queries++
					ds := tg.Datasource
					if ds == nil {
						ds = p.Datasource
					}
					if ds == nil || ds.Type != "prometheus" || ds.UID != "prometheus" {
						t.Errorf("%s: panel %d %q target %s: datasource %+v, want the provisioned prometheus", file, p.ID, p.Title, tg.RefID, ds)
					}
					if strings.TrimSpace(tg.Expr) == "" {
						t.Errorf("%s: panel %d %q target %s has no expression", file, p.ID, p.Title, tg.RefID)
					}
				}
				walk(p.Panels)
			}
		}
		walk(d.Panels)
		if queries < 8 {
			t.Errorf("%s: only %d queries", file, queries)
		}
	}

	var ds struct {
		Datasources []struct {
			Name, UID, Type, URL string
		} `yaml:"datasources"`
	}
	readYAML(t, filepath.Join(deployDir(t), "grafana", "provisioning", "datasources", "prometheus.yaml"), &ds)
	if len(ds.Datasources) != 1 || ds.Datasources[0].UID != "prometheus" || ds.Datasources[0].Type != "prometheus" ||
		ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("datasource provisioning = %+v, want one prometheus datasource, uid prometheus, at http://prometheus:9090", ds.Datasources)
	}
	var dp struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, filepath.Join(deployDir(t), "grafana", "provisioning", "dashboards", "edgeanchor.yaml"), &dp)
	if len(dp.Providers) != 1 || dp.Providers[0].Type != "file" || dp.Providers[0].Options.Path != "/var/lib/grafana/dashboards" {
		t.Errorf("dashboard provisioning = %+v, want one file provider at /var/lib/grafana/dashboards", dp.Providers)
	}
}

// TestDashboardExpressionsParse hands every dashboard expression to promtool
// as a recording rule: promtool parses it with Prometheus's own PromQL parser.
func TestDashboardExpressionsParse(t *testing.T) {
	promtool := tool(t, "promtool")
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	n := 0
	for _, e := range dashboardExprs(t) {
		if strings.HasPrefix(e.expr, "label_values(") {
			continue // a Grafana function, checked by TestDashboardsUseExportedMetrics
		}
		expr, err := expandGrafana(e.expr)
		if err != nil {
			t.Errorf("%s: %v", e.where, err)
			continue
		}
		n++
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:expr_%d", n), Expr: expr})
	}
	doc := map[string]any{"groups": []any{map[string]any{"name": "dashboards", "rules": rules}}}
	b, err := yamlMarshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboards.rules.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, nil, promtool, "check", "rules", path)
	if err != nil {
		t.Fatalf("promtool check rules on the dashboards' expressions: %v\n%s", err, out)
	}
	mustContain(t, "promtool output", out, fmt.Sprintf("SUCCESS: %d rules found", n))
}
