package deploy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"gopkg.in/yaml.v3"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	ledgerapp "github.com/edgeanchor/edgeanchor/ledger/app"
)

// stack is a real ledger node and a real gateway on loopback.
type stack struct {
	ledgerRPC     string // http://127.0.0.1:P
	ledgerMetrics string // 127.0.0.1:P (CometBFT's prometheus listener)
	gatewayHTTP   string // 127.0.0.1:P (the gateway's HTTP API, /metrics)
	gatewayDID    device.DID
}

var (
	stackOnce sync.Once
	theStack  *stack
	stackErr  = "it failed to start in an earlier test"
	stackStop []func()
)

// TestMain stops the shared stack after every test has run.
func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(stackStop) - 1; i >= 0; i-- {
		stackStop[i]()
	}
	os.Exit(code)
}

// liveStack starts, once per test process, a single-validator ledger node
// and a gateway the way docs/operations.md installs them, with the real
// binary as OS processes: `edgeanchor keygen` (the gateway key), `edgeanchor
// ledger init` admitting that gateway in the genesis, `edgeanchor ledger
// start`, and `edgeanchor gateway --config`, all on free loopback ports; then
// it drives real traffic through them (driveTraffic). Everything stops in
// TestMain.
func liveStack(t *testing.T) *stack {
	t.Helper()
	stackOnce.Do(func() {
		st, err := startStack(t)
		if err != nil {
			stackErr = err.Error()
			return
		}
		theStack = st
	})
	if theStack == nil {
		t.Fatalf("live stack: %s", stackErr)
	}
	return theStack
}

func startStack(t *testing.T) (*stack, error) {
	dir, err := os.MkdirTemp("", "edgeanchor-deploy-")
	if err != nil {
		return nil, err
	}
	stackStop = append(stackStop, func() { os.RemoveAll(dir) })
	bin := testbin.Path(t, "./cmd/edgeanchor")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cli := func(args ...string) error {
		if out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("edgeanchor %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		return nil
	}

	// The gateway's key, and a ledger home whose genesis admits it.
	keyPath := filepath.Join(dir, "gateway.pem")
	if err := cli("keygen", "--out", keyPath); err != nil {
		return nil, err
	}
	signer, err := device.LoadKeySigner(keyPath)
	if err != nil {
		return nil, err
	}
	home := filepath.Join(dir, "ledger")
	ports := testutil.FreePorts(t, 5)
	p2pPort, rpcPort, promPort := ports[0], ports[1], ports[2]
	if err := cli("ledger", "init", "--home", home, "--chain-id", "edgeanchor-deploy-test",
		"--p2p-port", fmt.Sprint(p2pPort), "--rpc-port", fmt.Sprint(rpcPort), "--prometheus-port", fmt.Sprint(promPort),
		"--gateway-pub", filepath.Join(dir, "gateway.pub.pem"), "--gateway-site", "site-a", "--gateway-name", "deploy-test"); err != nil {
		return nil, err
	}
	ledgerExited, ledgerLog, err := startProcess(t, dir, "ledger", bin, "ledger", "start", "--home", home, "--log-level", "warn")
	if err != nil {
		return nil, err
	}

	// The gateway, on free loopback ports.
	httpAddr := fmt.Sprintf("127.0.0.1:%d", ports[3])
	mqttAddr := fmt.Sprintf("127.0.0.1:%d", ports[4])
	st := &stack{
		ledgerRPC:     fmt.Sprintf("http://127.0.0.1:%d", rpcPort),
		ledgerMetrics: fmt.Sprintf("127.0.0.1:%d", promPort),
		gatewayHTTP:   httpAddr,
		gatewayDID:    signer.DID(),
	}
	conf := map[string]any{
		"data_dir":   filepath.Join(dir, "gateway"),
		"key_path":   keyPath,
		"site":       "site-a",
		"name":       "deploy-test",
		"ledger_rpc": st.ledgerRPC,
		"mqtt":       map[string]any{"tcp": mqttAddr, "ws": "", "tls": ""},
		"http":       map[string]any{"addr": httpAddr},
	}
	b, err := yaml.Marshal(conf)
	if err != nil {
		return nil, err
	}
	confPath := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(confPath, b, 0o600); err != nil {
		return nil, err
	}
	gwExited, gwLog, err := startProcess(t, dir, "gateway", bin, "gateway", "--config", confPath, "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	logs := func() string {
		l, _ := os.ReadFile(ledgerLog)
		g, _ := os.ReadFile(gwLog)
		return fmt.Sprintf("ledger log:\n%s\ngateway log:\n%s", l, g)
	}

	// Ready: the gateway serves /metrics, the chain is past height 2.
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-gwExited:
			return nil, fmt.Errorf("the gateway exited\n%s", logs())
		case <-ledgerExited:
			return nil, fmt.Errorf("the ledger node exited\n%s", logs())
		default:
		}
		_, gerr := testutil.HTTPGet("http://" + st.gatewayHTTP + "/metrics")
		h, lerr := ledgerHeight(st.ledgerRPC)
		if gerr == nil && lerr == nil && h >= 2 {
			if err := driveTraffic(t, st, confPath, mqttAddr, dir); err != nil {
				return nil, fmt.Errorf("%w\n%s", err, logs())
			}
			return st, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("not ready in 60s (gateway: %v; ledger: height %d, %v)\n%s", gerr, h, lerr, logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// trafficDevices and trafficMessages size the real traffic driveTraffic sends.
const (
	trafficDevices  = 2
	trafficMessages = 10
)

// driveTraffic gives the gateway real work, so that its labelled series exist
// and an anchor reaches the ledger: enrollment tokens from `edgeanchor token
// create`, then `firmware-sim load` enrolls env devices through the gateway
// (RegisterDevice committed on the ledger) and publishes signed readings,
// which the gateway stores, batches and anchors.
func driveTraffic(t *testing.T, st *stack, confPath, mqttAddr, dir string) error {
	bin := testbin.Path(t, "./cmd/edgeanchor")
	sim := testbin.Path(t, "./firmware-sim")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	toks, err := exec.CommandContext(ctx, bin, "token", "create", "--site", "site-a", "--kind", "env",
		"--count", fmt.Sprint(trafficDevices), "--ttl", "1h", "--config", confPath).Output()
	if err != nil {
		return fmt.Errorf("token create: %w", err)
	}
	tokFile := filepath.Join(dir, "tokens.txt")
	if err := os.WriteFile(tokFile, append([]byte("env\n"), toks...), 0o600); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, sim, "load", "--gateway", "tcp://"+mqttAddr, "--devices", fmt.Sprint(trafficDevices),
		"--profile", "env", "--site", "site-a", "--tokens", tokFile, "--state", filepath.Join(dir, "sim"),
		"--messages", fmt.Sprint(trafficMessages), "--stats", "0").CombinedOutput()
	if err != nil {
		return fmt.Errorf("firmware-sim load: %w\n%s", err, out)
	}
	want := fmt.Sprintf("%d acknowledged", trafficDevices*trafficMessages)
	if !strings.Contains(string(out), want) {
		return fmt.Errorf("firmware-sim load: want %q:\n%s", want, out)
	}
	// The records' batch is anchored: the ledger counts it for this gateway.
	anchored := fmt.Sprintf("edgeanchor_ledger_anchors_total{gateway=%q}", st.gatewayDID)
	for {
		b, err := testutil.HTTPGet("http://" + st.ledgerMetrics + "/metrics")
		if err == nil && strings.Contains(string(b), anchored) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no %s on the ledger node within 90 s (%v)", anchored, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func ledgerHeight(rpc string) (int64, error) {
	b, err := testutil.HTTPGet(rpc + "/status")
	if err != nil {
		return 0, err
	}
	var st struct {
		Result struct {
			SyncInfo struct {
				LatestBlockHeight int64 `json:"latest_block_height,string"`
			} `json:"sync_info"`
		} `json:"result"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return 0, err
	}
	return st.Result.SyncInfo.LatestBlockHeight, nil
}

// declaredMetrics are the families our code declares, vectors included: the
// gateway assembled in this process exactly as `edgeanchor gateway` assembles
// it (gateway.New with Deps.Ledger) and the ledger
// application's metrics, all on a recording registerer.
func declaredMetrics(t testing.TB, st *stack) metricSet {
	t.Helper()
	rec := newRecordingRegisterer()
	if _, err := ledgerapp.NewMetrics(rec); err != nil {
		t.Fatal(err)
	}
	cfg := gateway.DefaultConfig()
	dir := t.TempDir()
	cfg.DataDir = dir
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
	g, err := gateway.New(cfg, gateway.Deps{Registerer: rec, Gatherer: rec.reg, Signer: device.NewKeySigner(priv), Ledger: client})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	return rec.metrics()
}

// internalsMetricNames are the metric names docs/internals.md fixes.
func internalsMetricNames(t testing.TB) []string {
	t.Helper()
	doc := readFile(t, filepath.Join(moduleRoot(t), "docs", "internals.md"))
	_, section, ok := strings.Cut(doc, "## Metric names")
	if !ok {
		t.Fatal("docs/internals.md has no \"## Metric names\" section")
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	seen := map[string]bool{}
	var out []string
	for _, m := range metricNameRE.FindAllString(section, -1) {
		if !seen[m] {
			seen[m] = true
			out = append(out, m)
		}
	}
	return out
}

var metricNameRE = regexp.MustCompile(`edgeanchor_[a-z0-9_]+[a-z0-9]`)

// TestPromtoolCheckMetrics lints the real gateway's /metrics output and the
// ledger application's families on the real node's listener with
// `promtool check metrics`.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool := tool(t, "promtool")
	st := liveStack(t)
	_, _, body := scrape(t, "http://"+st.gatewayHTTP+"/metrics")
	if !strings.Contains(string(body), "edgeanchor_devices_connected") {
		t.Fatalf("gateway /metrics lacks edgeanchor_devices_connected:\n%.2000s", body)
	}
	out, err := run(t, body, promtool, "check", "metrics")
	if err != nil {
		t.Fatalf("promtool check metrics (gateway): %v\n%s", err, out)
	}

	// The ledger listener: our families only (CometBFT's own names are not
	// ours to change).
	_, fams, _ := scrape(t, "http://"+st.ledgerMetrics+"/metrics")
	var ours strings.Builder
	for name, f := range fams {
		if strings.HasPrefix(name, "edgeanchor_ledger_") {
			if _, err := expfmt.MetricFamilyToText(&ours, f); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !strings.Contains(ours.String(), "edgeanchor_ledger_registrations_total") {
		t.Fatalf("the ledger node's listener lacks the application's metrics:\n%s", ours.String())
	}
	out, err = run(t, []byte(ours.String()), promtool, "check", "metrics")
	if err != nil {
		t.Fatalf("promtool check metrics (ledger application): %v\n%s", err, out)
	}

	// The lint is not blind: a counter without _total and without help fails.
	out, err = run(t, []byte("# TYPE edgeanchor_bad counter\nedgeanchor_bad 1\n"), promtool, "check", "metrics")
	if err == nil {
		t.Fatalf("promtool check metrics accepted a badly named counter:\n%s", out)
	}
}

// TestDashboardsUseExportedMetrics: every metric name in every dashboard
// query and in every alert rule is exported by our code or by CometBFT, and
// histograms are selected through _bucket/_sum/_count. Every metric named in
// docs/internals.md is declared by the code and shown on a dashboard or
// watched by an alert.
func TestDashboardsUseExportedMetrics(t *testing.T) {
	st := liveStack(t)
	declared := declaredMetrics(t, st)
	gwServed, _, _ := scrape(t, "http://"+st.gatewayHTTP+"/metrics")
	ledgerServed, _, _ := scrape(t, "http://"+st.ledgerMetrics+"/metrics")

	exported := metricSet{"up": typeGauge} // Prometheus's own, per target
	exported.merge(cometbftMetrics())
	exported.merge(declared)
	exported.merge(gwServed)
	exported.merge(ledgerServed)

	// What a scrape must show by itself: every declared family that is not a
	// vector (those appear with their first label value) is served.
	for _, n := range []string{
		"edgeanchor_devices_connected", "edgeanchor_connects_total", "edgeanchor_messages_received_total",
		"edgeanchor_ingest_latency_seconds", "edgeanchor_store_write_seconds", "edgeanchor_store_size_bytes",
		"edgeanchor_store_disk_free_bytes", "edgeanchor_sequence_gaps_total", "go_goroutines", "process_resident_memory_bytes",
		// labelled, served since driveTraffic's devices enrolled and published
		"edgeanchor_enrollments_total", "edgeanchor_messages_accepted_total", "edgeanchor_ledger_height",
		"edgeanchor_batch_records", "edgeanchor_ledger_submit_seconds", "edgeanchor_anchor_lag_seconds",
	} {
		if _, ok := gwServed[n]; !ok {
			t.Errorf("the gateway's /metrics does not serve %s", n)
		}
	}
	for _, n := range []string{
		"cometbft_consensus_height", "cometbft_consensus_validators", "cometbft_consensus_missing_validators",
		"cometbft_consensus_block_interval_seconds", "edgeanchor_ledger_registrations_total",
		"edgeanchor_ledger_anchors_total",
	} {
		if _, ok := ledgerServed[n]; !ok {
			t.Errorf("the ledger node's prometheus listener does not serve %s", n)
		}
	}

	used := map[string]bool{}
	for _, e := range dashboardExprs(t) {
		expr := e.expr
		if sel, ok := labelValuesSelector(expr); ok {
			expr = sel
		}
		for _, n := range promqlMetricNames(expr) {
			used[n] = true
			if err := exported.resolve(n); err != nil {
				t.Errorf("%s: %v", e.where, err)
			}
		}
	}
	var rf ruleFile
	readYAML(t, filepath.Join(promDir(t), "alerts.yml"), &rf)
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			for _, n := range promqlMetricNames(r.Expr) {
				used[n] = true
				if err := exported.resolve(n); err != nil {
					t.Errorf("alert %s: %v", r.Alert, err)
				}
			}
		}
	}
	for _, n := range internalsMetricNames(t) {
		if _, ok := declared[n]; !ok {
			t.Errorf("docs/internals.md names %s but the code does not declare it", n)
		}
		if !used[n] && !used[n+"_bucket"] && !used[n+"_sum"] {
			t.Errorf("%s (docs/internals.md) is on no dashboard and in no alert", n)
		}
	}
}

// labelValuesSelector returns the series selector of a Grafana
// label_values(selector, label) query.
func labelValuesSelector(q string) (string, bool) {
	inner, ok := strings.CutPrefix(strings.TrimSpace(q), "label_values(")
	if !ok {
		return "", false
	}
	inner = strings.TrimSuffix(inner, ")")
	if i := strings.LastIndexByte(inner, ','); i >= 0 {
		inner = inner[:i]
	}
	return inner, true
}

// TestPrometheusScrapesGatewayAndLedger runs the real Prometheus server with
// deploy's prometheus.yml (targets rewritten to the test's loopback ports,
// a 1 s scrape and evaluation interval) and the real alert rules, pointed at
// the real gateway and ledger node; PromQL over its HTTP API returns their
// series, the rules load and evaluate, and every dashboard query runs.
func TestPrometheusScrapesGatewayAndLedger(t *testing.T) {
	promBin := tool(t, "prometheus")
	st := liveStack(t)

	var conf map[string]any
	readYAML(t, filepath.Join(promDir(t), "prometheus.yml"), &conf)
	global, _ := conf["global"].(map[string]any)
	if global == nil {
		t.Fatal("prometheus.yml has no global section")
	}
	global["scrape_interval"], global["evaluation_interval"], global["scrape_timeout"] = "1s", "1s", "1s"
	conf["rule_files"] = []string{filepath.Join(promDir(t), "alerts.yml")}
	targets := map[string]map[string]any{
		"edgeanchor-gateway": {"targets": []string{st.gatewayHTTP}, "labels": map[string]string{"site": "site-a"}},
		"edgeanchor-ledger":  {"targets": []string{st.ledgerMetrics}, "labels": map[string]string{"org": "validator0"}},
	}
	scs, _ := conf["scrape_configs"].([]any)
	for _, sc := range scs {
		m := sc.(map[string]any)
		tg, ok := targets[fmt.Sprint(m["job_name"])]
		if !ok {
			t.Fatalf("prometheus.yml: unexpected job %v", m["job_name"])
		}
		m["static_configs"] = []any{tg}
		delete(targets, fmt.Sprint(m["job_name"]))
	}
	if len(targets) != 0 {
		t.Fatalf("prometheus.yml lacks jobs %v", sortedKeys(targets))
	}
	dir := t.TempDir()
	b, err := yaml.Marshal(conf)
	if err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(confPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := testutil.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, promBin, "--config.file="+confPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = dieWithParent()
	var logBuf testutil.SyncBuffer
	cmd.Stdout, cmd.Stderr = &logBuf, &logBuf
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = cmd.Wait() })
	api := "http://" + addr

	testutil.WaitFor(t, 30*time.Second, "prometheus ready", func() error { _, err := testutil.HTTPGet(api + "/-/ready"); return err })
	query := func(q string) ([]promSample, error) { return promQuery(api, q) }

	// Both targets up, and their series in the TSDB.
	for _, q := range []string{
		`up{job="edgeanchor-gateway"} == 1`,
		`up{job="edgeanchor-ledger"} == 1`,
		`edgeanchor_devices_connected{job="edgeanchor-gateway", site="site-a"}`,
		`edgeanchor_anchor_lag_seconds{job="edgeanchor-gateway"}`,
		`cometbft_consensus_height{job="edgeanchor-ledger", chain_id="edgeanchor-deploy-test"} > 1`,
		`cometbft_consensus_validators{job="edgeanchor-ledger"} == 1`,
		`edgeanchor_ledger_registrations_total{job="edgeanchor-ledger", org="validator0"}`,
		`edgeanchor_ledger_height{job="edgeanchor-gateway"} > 0`,
		`edgeanchor_store_disk_free_bytes{job="edgeanchor-gateway"} > 0`,
		`go_goroutines{job="edgeanchor-gateway"} > 0`,
		// The traffic of driveTraffic: enrollments, accepted records, a batch
		// anchored on the ledger under the gateway's DID, nothing left unanchored.
		fmt.Sprintf(`edgeanchor_enrollments_total{job="edgeanchor-gateway", result="ok"} == %d`, trafficDevices),
		fmt.Sprintf(`edgeanchor_messages_accepted_total{job="edgeanchor-gateway", kind="env.dust"} == %d`, trafficDevices*trafficMessages),
		`edgeanchor_batches_total{job="edgeanchor-gateway"} > 0`,
		fmt.Sprintf(`edgeanchor_ledger_registrations_total{job="edgeanchor-ledger"} == %d`, trafficDevices),
		fmt.Sprintf(`edgeanchor_ledger_anchors_total{job="edgeanchor-ledger", gateway=%q} > 0`, st.gatewayDID),
		`edgeanchor_unanchored_records{job="edgeanchor-gateway"} == 0`,
	} {
		testutil.WaitFor(t, 45*time.Second, "query "+q, func() error {
			res, err := query(q)
			if err != nil {
				return err
			}
			if len(res) == 0 {
				return fmt.Errorf("no series (prometheus log: %s)", logBuf.String())
			}
			return nil
		})
	}
	// The height Prometheus stored grows with the chain.
	growth := `max_over_time(cometbft_consensus_height{job="edgeanchor-ledger"}[1m]) - min_over_time(cometbft_consensus_height{job="edgeanchor-ledger"}[1m]) > 0`
	testutil.WaitFor(t, 30*time.Second, "query "+growth, func() error {
		res, err := query(growth)
		if err == nil && len(res) == 0 {
			err = errors.New("the stored height does not grow")
		}
		return err
	})

	// The alert rules loaded and evaluated without error.
	var rules struct {
		Data struct {
			Groups []struct {
				Name  string `json:"name"`
				Rules []struct {
					Name           string    `json:"name"`
					Health         string    `json:"health"`
					LastError      string    `json:"lastError"`
					State          string    `json:"state"`
					LastEvaluation time.Time `json:"lastEvaluation"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	var rf ruleFile
	readYAML(t, filepath.Join(promDir(t), "alerts.yml"), &rf)
	want := 0
	for _, g := range rf.Groups {
		want += len(g.Rules)
	}
	testutil.WaitFor(t, 30*time.Second, "rules evaluated", func() error {
		b, err := testutil.HTTPGet(api + "/api/v1/rules")
		if err != nil {
			return err
		}
		rules.Data.Groups = nil
		if err := json.Unmarshal(b, &rules); err != nil {
			return err
		}
		n := 0
		for _, g := range rules.Data.Groups {
			for _, r := range g.Rules {
				if r.LastEvaluation.IsZero() {
					return fmt.Errorf("rule %s not evaluated yet", r.Name)
				}
				if r.Health != "ok" {
					return fmt.Errorf("rule %s: health %s: %s", r.Name, r.Health, r.LastError)
				}
				n++
			}
		}
		if n != want {
			return fmt.Errorf("%d rules loaded, want %d", n, want)
		}
		return nil
	})
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			if r.State == "firing" {
				t.Errorf("alert %s fires against a healthy gateway and ledger", r.Name)
			}
		}
	}

	// Every dashboard query runs on the real server.
	for _, e := range dashboardExprs(t) {
		if _, ok := labelValuesSelector(e.expr); ok {
			continue
		}
		expr, err := expandGrafana(e.expr)
		if err != nil {
			t.Errorf("%s: %v", e.where, err)
			continue
		}
		if _, err := query(expr); err != nil {
			t.Errorf("%s: %v", e.where, err)
		}
	}
}

type promSample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

// promQuery runs an instant query through Prometheus's HTTP API.
func promQuery(api, q string) ([]promSample, error) {
	b, err := testutil.HTTPGet(api + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return nil, err
	}
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string          `json:"resultType"`
			Result     json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, err
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s", q, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return nil, nil
	}
	var out []promSample
	if err := json.Unmarshal(r.Data.Result, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// dieWithParent makes a child process get SIGKILL if the test process dies
// without stopping it (a panic skips TestMain's cleanup).
func dieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// startProcess runs bin with args as an OS process, its output in
// dir/name.log; exited is closed when it ends. TestMain stops it with SIGINT
// (the daemons' clean stop), then kills it after 10 s.
func startProcess(t *testing.T, dir, name, bin string, args ...string) (exited chan struct{}, logPath string, err error) {
	pctx, pcancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(pctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	cmd.SysProcAttr = dieWithParent()
	logPath = filepath.Join(dir, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		pcancel()
		return nil, "", err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		pcancel()
		logf.Close()
		return nil, "", fmt.Errorf("start %s: %w", name, err)
	}
	exited = make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	stackStop = append(stackStop, func() { pcancel(); <-exited; logf.Close() })
	return exited, logPath, nil
}
