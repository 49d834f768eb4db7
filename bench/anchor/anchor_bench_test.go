// Package anchorbench measures anchoring end to end: devices publish signed
// readings over MQTT to a real gateway (mochi broker, Badger store, batcher
// with 1 s batches, anchorer) that anchors on a single-validator CometBFT
// ledger running as its own OS process. It reports the record → anchored
// latency (from the PUBACK, when the record is on disk, to the moment the
// device receives the anchored receipt notice) and, for the proof bundles
// the gateway serves, their size and the offline verification time. Run by
// `make bench` (-benchtime 1x); results go to bench/results/anchor.json.
//
// ANCHOR_BENCH_DEVICES (8) devices publish ANCHOR_BENCH_RATE readings/s
// each (10) for ANCHOR_BENCH_SECONDS (20).
package anchorbench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/gateway/store"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/ledger"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

type result struct {
	When            string  `json:"when"`
	CPUs            int     `json:"cpus"`
	Go              string  `json:"go"`
	Ledger          string  `json:"ledger"`
	TimeoutCommit   string  `json:"ledger_timeout_commit"`
	BatchInterval   string  `json:"batch_interval"`
	Devices         int     `json:"devices"`
	RatePerDevice   float64 `json:"readings_per_s_per_device"`
	Seconds         float64 `json:"seconds"`
	Records         int     `json:"records"`
	Anchored        int     `json:"anchored_notices"`
	Batches         uint64  `json:"batches"`
	P50Ms           float64 `json:"anchor_latency_p50_ms"`
	P90Ms           float64 `json:"anchor_latency_p90_ms"`
	P99Ms           float64 `json:"anchor_latency_p99_ms"`
	MaxMs           float64 `json:"anchor_latency_max_ms"`
	TargetP99Ms     float64 `json:"target_p99_ms"`
	BundleBytes     int     `json:"bundle_bytes"`
	BundleBatchSize uint64  `json:"bundle_batch_records"`
	VerifyAvgMs     float64 `json:"verify_avg_ms"`
	VerifyP99Ms     float64 `json:"verify_p99_ms"`
	VerifyRuns      int     `json:"verify_runs"`
	TargetVerifyMs  float64 `json:"target_verify_ms"`
	ProofServeMs    float64 `json:"proof_serve_ms"`
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

type benchDevice struct {
	key  *device.KeySigner
	c    paho.Client
	mu   sync.Mutex
	sent map[uint64]time.Time // seq → PUBACK time
	lat  []time.Duration
}

func pct(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	i := int(float64(len(d)-1) * p)
	return float64(d[i].Microseconds()) / 1000
}

func BenchmarkAnchor(b *testing.B) {
	for b.Loop() {
		runAnchorBench(b)
	}
}

func runAnchorBench(b *testing.B) {
	ndev := envInt("ANCHOR_BENCH_DEVICES", 8)
	rate := float64(envInt("ANCHOR_BENCH_RATE", 10))
	secs := envInt("ANCHOR_BENCH_SECONDS", 20)

	cluster := ledgertest.StartCluster(b, 1)
	rpc := cluster.RPC(0)
	client, err := ledgerclient.NewClient(rpc, ledgerclient.ClientOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	lgw := ledgertest.NewGateway(b, "site-a")
	if _, err := client.Submit(ctx, lgw.RegisterTx(b, cluster.Committee)); err != nil {
		b.Fatal(err)
	}
	reg := broker.NewStaticRegistry()
	devs := make([]*benchDevice, ndev)
	for i := range devs {
		key, tx := lgw.NewDevice(b, "env")
		if _, err := client.Submit(ctx, tx); err != nil {
			b.Fatal(err)
		}
		reg.Put(broker.DeviceInfo{DID: key.DID(), Pub: key.Public(), Kind: "env", Site: "site-a"})
		devs[i] = &benchDevice{key: key, sent: map[uint64]time.Time{}}
	}

	cfg := gateway.DefaultConfig()
	cfg.DataDir = b.TempDir()
	cfg.KeyPath = "unused"
	cfg.MQTT = gateway.MQTTConfig{TCP: "127.0.0.1:0"}
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.LedgerRPC = rpc
	cfg.BatchInterval = time.Second
	cfg.Limits.DeviceRate = 0
	prom := prometheus.NewRegistry()
	g, err := gateway.New(cfg, gateway.Deps{Logger: quiet(), Registerer: prom, Gatherer: prom, Signer: lgw.Signer, Registry: reg, Ledger: client})
	if err != nil {
		b.Fatal(err)
	}
	an := g.Anchoring()
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(runCtx) }()
	defer func() {
		stop()
		<-done
	}()
	testutil.WaitUntil(b, 10*time.Second, "broker up", g.Broker().Up)

	for _, d := range devs {
		pw, err := credential.MakeConnect(d.key, time.Now())
		if err != nil {
			b.Fatal(err)
		}
		o := paho.NewClientOptions().AddBroker("tcp://" + g.Broker().Addr("tcp")).SetClientID(string(d.key.DID())).
			SetUsername(string(d.key.DID())).SetPassword(pw).SetAutoReconnect(false).SetCleanSession(true)
		d.c = paho.NewClient(o)
		if tok := d.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatalf("connect: %v", tok.Error())
		}
		d := d
		tok := d.c.Subscribe(broker.ReceiptTopic(d.key.DID()), 1, func(_ paho.Client, m paho.Message) {
			now := time.Now()
			var rm store.ReceiptMessage
			if json.Unmarshal(m.Payload(), &rm) != nil || rm.Batch == 0 {
				return
			}
			var rc anchor.Receipt
			if json.Unmarshal(rm.Receipt, &rc) != nil {
				return
			}
			d.mu.Lock()
			if t0, ok := d.sent[rc.Seq]; ok {
				d.lat = append(d.lat, now.Sub(t0))
				delete(d.sent, rc.Seq)
			}
			d.mu.Unlock()
		})
		if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			b.Fatalf("subscribe: %v", tok.Error())
		}
		defer d.c.Disconnect(0)
	}

	// Load: every device on its own fixed schedule, bounded in count and time.
	start := time.Now()
	var wg sync.WaitGroup
	per := int(rate) * secs
	for _, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
			defer tick.Stop()
			for seq := uint64(1); seq <= uint64(per); seq++ {
				<-tick.C
				body, _ := device.NewBody(d.key.DID(), seq, time.Now(), "env.dust",
					map[string]any{"pm25_ugm3": 12.5, "pm10_ugm3": 40.0, "noise_dba": 62.0})
				env, _ := device.Seal(d.key, body)
				tok := d.c.Publish(broker.UpTopic(d.key.DID()), 1, false, env)
				if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
					b.Errorf("publish: %v", tok.Error())
					return
				}
				d.mu.Lock()
				d.sent[seq] = time.Now()
				d.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	loadSecs := time.Since(start).Seconds()
	// Wait (bounded) for the last anchored notices.
	_ = testutil.Poll(30*time.Second, func() error {
		waiting := 0
		for _, d := range devs {
			d.mu.Lock()
			waiting += len(d.sent)
			d.mu.Unlock()
		}
		if waiting != 0 {
			return fmt.Errorf("%d notices outstanding", waiting)
		}
		return nil
	})
	var lat []time.Duration
	for _, d := range devs {
		d.mu.Lock()
		lat = append(lat, d.lat...)
		d.mu.Unlock()
	}
	slices.Sort(lat)

	// Proof bundles: size, serve time, offline verify time.
	last := g.Store().LastGSeq()
	t0 := time.Now()
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/records/%d/proof", g.HTTPAddr(), last/2))
	if err != nil {
		b.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	serve := time.Since(t0)
	if err != nil {
		b.Fatalf("proof: read body: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("proof: %s %s", resp.Status, raw)
	}
	trust, err := evidence.ExportTrustFromHome(cluster.Homes[0])
	if err != nil {
		b.Fatal(err)
	}
	var vt []time.Duration
	var batchRecords uint64
	for range 200 {
		s := time.Now()
		bundle, err := evidence.ParseBundle(raw)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bundle.Verify(trust, nil); err != nil {
			b.Fatal(err)
		}
		vt = append(vt, time.Since(s))
		batchRecords = bundle.Merkle.Size
	}
	var sum time.Duration
	for _, d := range vt {
		sum += d
	}
	slices.Sort(vt)
	sb, _ := an.Batches.Last()

	conf, _ := ledger.LoadConfig(cluster.Homes[0])
	res := result{
		When: time.Now().UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), Go: runtime.Version(),
		Ledger:        "1 CometBFT validator, own OS process (ledgertest.StartCluster)",
		TimeoutCommit: conf.Consensus.TimeoutCommit.String(), BatchInterval: cfg.BatchInterval.String(),
		Devices: ndev, RatePerDevice: rate, Seconds: loadSecs, Records: int(last), Anchored: len(lat),
		P50Ms: pct(lat, 0.50), P90Ms: pct(lat, 0.90), P99Ms: pct(lat, 0.99), MaxMs: pct(lat, 1),
		TargetP99Ms: 1500, BundleBytes: len(raw), BundleBatchSize: batchRecords,
		VerifyAvgMs: float64(sum.Microseconds()) / float64(len(vt)) / 1000, VerifyP99Ms: pct(vt, 0.99),
		VerifyRuns: len(vt), TargetVerifyMs: 10, ProofServeMs: float64(serve.Microseconds()) / 1000,
	}
	if sb != nil {
		res.Batches = sb.Seq
	}
	if len(lat) != int(last) {
		b.Errorf("%d anchored notices for %d records", len(lat), last)
	}
	b.ReportMetric(res.P50Ms, "p50_ms")
	b.ReportMetric(res.P99Ms, "p99_ms")
	b.ReportMetric(res.VerifyAvgMs, "verify_ms")
	b.ReportMetric(float64(res.BundleBytes), "bundle_bytes")
	out, _ := json.MarshalIndent(res, "", "  ")
	path := filepath.Join("..", "results", "anchor.json")
	if err := os.WriteFile(path, append(out, '\n'), 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("%s", out)
}
