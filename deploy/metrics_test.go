package deploy

import (
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	cfg "github.com/cometbft/cometbft/config"
	nm "github.com/cometbft/cometbft/node"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metric family types, as in the exposition format.
const (
	typeCounter   = "counter"
	typeGauge     = "gauge"
	typeHistogram = "histogram"
	typeSummary   = "summary"
	typeUnknown   = "unknown"
)

// metricSet maps a metric family name to its type. It is what the code
// exports: families declared on a registerer (vectors included, which a
// scrape shows only once a label value was used) and families scraped from
// a real process.
type metricSet map[string]string

func (s metricSet) add(name, typ string) {
	if old, ok := s[name]; ok && old != typeUnknown && typ == typeUnknown {
		return
	}
	s[name] = typ
}

func (s metricSet) merge(o metricSet) {
	for n, typ := range o {
		s.add(n, typ)
	}
}

// resolve says whether a name used in PromQL selects an exported series:
// a family itself (not a histogram or summary, whose samples carry suffixes),
// or a histogram's _bucket/_sum/_count, or a summary's _sum/_count.
func (s metricSet) resolve(name string) error {
	if typ, ok := s[name]; ok {
		if typ == typeHistogram || typ == typeSummary {
			return fmt.Errorf("%s is a %s: select %s_bucket, _sum or _count", name, typ, name)
		}
		return nil
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(name, suf)
		if !ok {
			continue
		}
		switch s[base] {
		case typeHistogram:
			return nil
		case typeSummary:
			if suf != "_bucket" {
				return nil
			}
		}
	}
	return fmt.Errorf("%s is not exported", name)
}

// recordingRegisterer registers on a real registry and remembers the name
// and type of every family of every collector registered through it.
type recordingRegisterer struct {
	reg *prometheus.Registry
	mu  sync.Mutex
	set metricSet
}

func newRecordingRegisterer() *recordingRegisterer {
	return &recordingRegisterer{reg: prometheus.NewRegistry(), set: metricSet{}}
}

var _ prometheus.Registerer = (*recordingRegisterer)(nil)

func (r *recordingRegisterer) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	typ := collectorType(c)
	ch := make(chan *prometheus.Desc, 64)
	go func() { c.Describe(ch); close(ch) }()
	for d := range ch {
		if n := descName(d); n != "" {
			r.set.add(n, typ)
		}
	}
	return nil
}

func (r *recordingRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r *recordingRegisterer) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

func (r *recordingRegisterer) metrics() metricSet {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := metricSet{}
	out.merge(r.set)
	return out
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

// descName is the family name of a Desc (client_golang does not export it;
// its String form carries it).
func descName(d *prometheus.Desc) string {
	if m := fqNameRE.FindStringSubmatch(d.String()); m != nil {
		return m[1]
	}
	return ""
}

// collectorType is the family type of a single-family collector; collectors
// of several families (Go, process) are typeUnknown here and get their types
// from a scrape.
func collectorType(c prometheus.Collector) string {
	switch c.(type) {
	case *prometheus.CounterVec:
		return typeCounter
	case *prometheus.GaugeVec:
		return typeGauge
	case *prometheus.HistogramVec:
		return typeHistogram
	case *prometheus.SummaryVec:
		return typeSummary
	}
	if m, ok := c.(prometheus.Metric); ok {
		var pb dto.Metric
		if err := m.Write(&pb); err == nil {
			switch {
			case pb.Counter != nil:
				return typeCounter
			case pb.Gauge != nil:
				return typeGauge
			case pb.Histogram != nil:
				return typeHistogram
			case pb.Summary != nil:
				return typeSummary
			}
		}
	}
	return typeUnknown
}

// cometbftMetrics are the families CometBFT v0.38 declares for a node with
// instrumentation.prometheus on: node.DefaultMetricsProvider, the function
// the ledger node calls, run against a recording registerer. (go-kit's
// prometheus wrappers register on prometheus.DefaultRegisterer at the time of
// the call, so it is swapped for the duration; nothing else in this test
// process uses it.)
var cometbftMetrics = sync.OnceValue(func() metricSet {
	rec := newRecordingRegisterer()
	saved := prometheus.DefaultRegisterer
	prometheus.DefaultRegisterer = rec
	defer func() { prometheus.DefaultRegisterer = saved }()
	ic := cfg.DefaultInstrumentationConfig()
	ic.Prometheus = true
	nm.DefaultMetricsProvider(ic)("declared")
	return rec.metrics()
})

// scrape fetches a /metrics endpoint and parses it.
func scrape(t testing.TB, url string) (metricSet, map[string]*dto.MetricFamily, []byte) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: status %d, %v", url, resp.StatusCode, err)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("scrape %s: parse: %v", url, err)
	}
	set := metricSet{}
	for name, f := range fams {
		set.add(name, strings.ToLower(f.GetType().String()))
	}
	return set, fams, body
}

func TestMetricSetResolve(t *testing.T) {
	s := metricSet{"a_seconds": typeHistogram, "b_total": typeCounter, "c": typeSummary, "g": typeUnknown}
	for _, ok := range []string{"a_seconds_bucket", "a_seconds_sum", "a_seconds_count", "b_total", "c_sum", "c_count", "g"} {
		if err := s.resolve(ok); err != nil {
			t.Errorf("resolve(%s): %v", ok, err)
		}
	}
	for _, bad := range []string{"a_seconds", "b_total_bucket", "c", "c_bucket", "nope", "b_total_sum"} {
		if err := s.resolve(bad); err == nil {
			t.Errorf("resolve(%s) = nil, want an error", bad)
		}
	}
}

func TestCometbftMetricsDeclared(t *testing.T) {
	set := cometbftMetrics()
	want := map[string]string{
		"cometbft_consensus_height":                 typeGauge,
		"cometbft_consensus_missing_validators":     typeGauge,
		"cometbft_consensus_validators":             typeGauge,
		"cometbft_consensus_block_interval_seconds": typeHistogram,
		"cometbft_p2p_peers":                        typeGauge,
	}
	for n, typ := range want {
		if set[n] != typ {
			t.Errorf("CometBFT declares %s as %q, want %q", n, set[n], typ)
		}
	}
}
