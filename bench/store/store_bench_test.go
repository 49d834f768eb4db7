// Package storebench measures a gateway whose record store grew (issue 18,
// item 3): records are generated through the real write path (devices'
// envelopes signed with their SM2 keys, in parallel, each device's in seq
// order, then Store.Enqueue: the store's group commit with its receipt
// signatures), the gateway's own batcher cuts batches and its anchorer
// anchors them on a real single-validator ledger (in process): one ledger
// is enough, since a batch costs the ledger one tx whatever its size.
//
// At EDGEANCHOR_BENCH_RECORDS × 10%, 20%, 50% and 100% (default 10,000,000:
// 1M, 2M, 5M, 10M) it waits until everything is anchored, then measures:
// the proof bundle of the OLDEST record through the HTTP proof route (cold:
// the first request after a restart; warm: the median of 5), a clean stop,
// the data directory's disk use (allocated blocks) per record, and the
// restart (gateway.New and the API answering). At the end: the restart after
// kill -9 of a process writing to the store (a child process: this test
// binary), the audit's throughput over ~EDGEANCHOR_BENCH_AUDIT_RECORDS
// (100,000: a day of a busy site), and the ingest rate for
// EDGEANCHOR_BENCH_INGEST_SECONDS (10) alone, during a full audit, and
// during an export (GET /v1/records pages of 1,000 from gseq 1 on).
//
// Then the retention: the older half archived (gateway stopped; at most
// EDGEANCHOR_BENCH_ARCHIVE_RECORDS, 1,000,000), the time, the file, the
// space given back and a proof from the archive.
//
// Results: bench/results/store.json and the curves store-restart.png,
// store-disk.png, store-proof.png (or EDGEANCHOR_BENCH_OUT, a directory).
// EDGEANCHOR_BENCH_DEVICES (200) devices publish.
package storebench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emmansun/gmsm/sm2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/audit"
	"github.com/edgeanchor/edgeanchor/bench/plot"
	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/gateway/archive"
	"github.com/edgeanchor/edgeanchor/gateway/batch"
	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
	"github.com/edgeanchor/edgeanchor/gateway/store"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return string(bytes.TrimSpace(b))
}

// point is what was measured once the store held Records records.
type point struct {
	Records         uint64  `json:"records"`
	GenRecordsPerS  float64 `json:"generation_records_per_s"` // since the previous point
	Batches         uint64  `json:"batches"`
	DiskBytes       int64   `json:"disk_bytes"`
	BytesPerRecord  float64 `json:"disk_bytes_per_record"`
	StopSeconds     float64 `json:"clean_stop_s"`
	RestartSeconds  float64 `json:"restart_s"` // gateway.New until the API answers
	ProofColdMs     float64 `json:"oldest_proof_cold_ms"`
	ProofWarmMs     float64 `json:"oldest_proof_warm_ms"`
	ProofNewestMs   float64 `json:"newest_proof_warm_ms"`
	LoadAvgAtPoint  string  `json:"loadavg"`
	HeapAllocMB     float64 `json:"bench_process_heap_mb"`
	StoreOpenedWith string  `json:"-"`
}

type ingestRun struct {
	What          string  `json:"what"`
	Seconds       float64 `json:"seconds"`
	Records       int64   `json:"records"`
	RecordsPerSec float64 `json:"records_per_s"`
	ReaderPerSec  float64 `json:"reader_records_per_s,omitempty"` // what the audit or export read meanwhile
}

type result struct {
	Date            string      `json:"date"`
	CPUs            int         `json:"cpus"`
	LoadAvgFrom     string      `json:"loadavg_from"`
	LoadAvgTo       string      `json:"loadavg_to"`
	Devices         int         `json:"devices"`
	Note            string      `json:"note"`
	Points          []point     `json:"points"`
	Kill9RestartS   float64     `json:"restart_after_kill9_s"`
	Kill9Records    uint64      `json:"kill9_records_written_by_child"`
	AuditRecords    uint64      `json:"audit_records"`
	AuditSeconds    float64     `json:"audit_s"`
	AuditPerSec     float64     `json:"audit_records_per_s"`
	Ingest          []ingestRun `json:"ingest_while_reading"`
	TotalSeconds    float64     `json:"total_s"`
	RecordsPerBatch float64     `json:"records_per_batch"`
	Archive         archiveRun  `json:"archive_oldest"`
}

type archiveRun struct {
	Records          uint64  `json:"records"`
	Batches          uint64  `json:"batches"`
	Seconds          float64 `json:"seconds"` // write, verify every bundle, delete, compact
	FileBytes        int64   `json:"file_bytes"`
	StoreBytesBefore int64   `json:"store_bytes_before"`
	StoreBytesAfter  int64   `json:"store_bytes_after"`
	ProofFirstMs     float64 `json:"proof_from_archive_first_ms"`
	ProofLastMs      float64 `json:"proof_from_archive_last_ms"`
}

// archiveOld archives the batches that end before the receive time of
// the middle record of the stopped gateway's store, or of record limit if
// that comes first (the archive verifies every bundle: ~1,200 records/s).
func archiveOld(b *testing.B, s *site, node *ledgertest.Node, lgw *ledgertest.Gateway, limit uint64) archiveRun {
	b.Helper()
	dir := filepath.Join(s.cfg.DataDir, "records")
	st, err := store.Open(dir, store.Options{Signer: lgw.Signer, Claims: batch.Claims()})
	if err != nil {
		b.Fatal(err)
	}
	mid, err := st.Get(min(st.LastGSeq()/2, limit))
	if err != nil {
		b.Fatal(err)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	trust, err := evidence.ExportTrustFromHome(node.Home)
	if err != nil {
		b.Fatal(err)
	}
	der, err := device.MarshalPublicKeyDER(lgw.Signer.Public())
	if err != nil {
		b.Fatal(err)
	}
	out := filepath.Join(b.TempDir(), "half.ea")
	r := archiveRun{StoreBytesBefore: diskUsage(s.cfg.DataDir)}
	t0 := time.Now()
	info, err := archive.Create(context.Background(), dir, archive.Options{Before: mid.Recv, Out: out, Ledger: s.client,
		GatewayPub: der, Trust: trust, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	r.Seconds = time.Since(t0).Seconds()
	r.Records, r.Batches = info.Records, info.LastBatch-info.FirstBatch+1
	r.StoreBytesAfter = diskUsage(s.cfg.DataDir)
	if fi, err := os.Stat(out); err == nil {
		r.FileBytes = fi.Size()
	}
	for i, g := range []uint64{info.FirstGSeq, info.LastGSeq} {
		t1 := time.Now()
		bu, err := archive.Bundle(out, g)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := bu.Verify(trust, nil); err != nil {
			b.Fatal(err)
		}
		ms := float64(time.Since(t1).Microseconds()) / 1000
		if i == 0 {
			r.ProofFirstMs = ms
		} else {
			r.ProofLastMs = ms
		}
	}
	return r
}

// site is the gateway under test and what it needs to restart.
type site struct {
	b      *testing.B
	node   *ledgertest.Node
	client *ledgerclient.Client
	lgw    *ledgertest.Gateway
	gwPEM  []byte // the gateway's private key (for the kill -9 child)
	devs   []*device.KeySigner
	seqs   []uint64
	cfg    gateway.Config
	g      *gateway.Gateway
	cancel context.CancelFunc
	done   chan error
}

func (s *site) start() time.Duration {
	s.b.Helper()
	t0 := time.Now()
	prom := prometheus.NewRegistry()
	g, err := gateway.New(s.cfg, gateway.Deps{Logger: slog.New(slog.DiscardHandler), Registerer: prom, Gatherer: prom,
		Signer: s.lgw.Signer, Registry: broker.NewStaticRegistry(), Ledger: s.client})
	if err != nil {
		s.b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.g, s.cancel, s.done = g, cancel, make(chan error, 1)
	go func() { s.done <- g.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		resp, err := http.Get("http://" + g.HTTPAddr() + "/v1/records?from_gseq=1&to_gseq=1")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			s.b.Fatalf("gateway API not up within 5 min: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(t0)
}

func (s *site) stop() time.Duration {
	t0 := time.Now()
	s.cancel()
	if err := <-s.done; err != nil {
		s.b.Errorf("gateway Run: %v", err)
	}
	return time.Since(t0)
}

// waitAnchored waits until the newest record's batch is anchored.
func (s *site) waitAnchored(within time.Duration) {
	s.b.Helper()
	an := s.g.Anchoring()
	deadline := time.Now().Add(within)
	for {
		last := s.g.Store().LastGSeq()
		sb, err := an.Batches.ByGSeq(last)
		if err == nil && sb.Anchor != nil {
			return
		}
		if time.Now().After(deadline) {
			s.b.Fatalf("records through %d not anchored within %s (%v)", last, within, err)
		}
		an.Batcher.Notify()
		time.Sleep(50 * time.Millisecond)
	}
}

// generate stores n more records through the store's write path: one
// goroutine per CPU signs its devices' envelopes in seq order and
// enqueues them, keeping up to 512 in flight. It stops early when stop
// closes; it returns how many were stored.
func (s *site) generate(n int64, stop <-chan struct{}) int64 {
	s.b.Helper()
	st := s.g.Store()
	workers := runtime.NumCPU()
	var stored, next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Pointer[error]
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var mine []int
			for i := w; i < len(s.devs); i += workers {
				mine = append(mine, i)
			}
			if len(mine) == 0 {
				return
			}
			var waits []func() (*store.Record, bool, error)
			drain := func(keep int) {
				for len(waits) > keep {
					if _, _, err := waits[0](); err != nil {
						failed.CompareAndSwap(nil, &err)
					}
					waits = waits[1:]
					stored.Add(1)
				}
			}
			defer drain(0)
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				if next.Add(1) > n || failed.Load() != nil {
					return
				}
				i := mine[k%len(mine)]
				d := s.devs[i]
				s.seqs[i]++
				seq := s.seqs[i]
				body, err := device.NewBody(d.DID(), seq, time.Now(), device.KindDust,
					map[string]any{"pm25_ugm3": 10 + float64(seq%50)/4, "pm10_ugm3": 30.5, "noise_dba": 55.25})
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				env, err := device.Seal(d, body)
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				wait, err := st.Enqueue(context.Background(), store.Pending{DID: d.DID(), Seq: seq, Kind: device.KindDust, Envelope: env, EnvHash: anchor.SM3(env)})
				if err != nil {
					failed.CompareAndSwap(nil, &err)
					return
				}
				waits = append(waits, wait)
				drain(512)
			}
		}(w)
	}
	wg.Wait()
	if e := failed.Load(); e != nil {
		s.b.Fatalf("generate: %v", *e)
	}
	return stored.Load()
}

// diskUsage is the space allocated to the files under dir.
func diskUsage(dir string) int64 {
	var n int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if fi, err := d.Info(); err == nil {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += st.Blocks * 512
			}
		}
		return nil
	})
	return n
}

// getMs times a GET that must answer 200.
func getMs(b *testing.B, url string) float64 {
	b.Helper()
	t0 := time.Now()
	resp, err := http.Get(url)
	if err != nil {
		b.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
	return float64(time.Since(t0).Microseconds()) / 1000
}

func median(xs []float64) float64 {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return xs[len(xs)/2]
}

func BenchmarkStoreGrowth(b *testing.B) {
	total := envInt("EDGEANCHOR_BENCH_RECORDS", 10_000_000)
	ndev := envInt("EDGEANCHOR_BENCH_DEVICES", 200)
	auditN := envInt("EDGEANCHOR_BENCH_AUDIT_RECORDS", 100_000)
	ingestSecs := envInt("EDGEANCHOR_BENCH_INGEST_SECONDS", 10)
	outDir := os.Getenv("EDGEANCHOR_BENCH_OUT")
	if outDir == "" {
		outDir = filepath.Join("..", "results")
	}
	start := time.Now()
	res := result{Date: start.UTC().Format(time.RFC3339), CPUs: runtime.NumCPU(), LoadAvgFrom: loadAvg(), Devices: ndev,
		Note: "records generated through Store.Enqueue (envelopes signed by the devices' SM2 keys in parallel, group commit, " +
			"receipts), batched by the gateway's batcher (batch_interval 1 s, batch_size 10000) and anchored by its anchorer on " +
			"one in-process validator; the load generator shares the CPUs; disk is allocated blocks of the data directory after a clean stop"}

	gwPriv, err := device.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	lgw := &ledgertest.Gateway{Signer: device.NewKeySigner(gwPriv), Site: "site-bench", Name: "gw-bench"}
	node := ledgertest.Start(b, ledgertest.Options{Gateways: []*ledgertest.Gateway{lgw}, Logger: slog.New(slog.DiscardHandler)})
	client, err := ledgerclient.NewClient(node.RPC, ledgerclient.ClientOptions{CommitTimeout: 60 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	s := &site{b: b, node: node, client: client, lgw: lgw, gwPEM: mustPEM(b, gwPriv)}
	// The whole run, not its setup: at 10 million records the audit starts
	// some 15 minutes in.
	ctx, cancel := context.WithTimeout(context.Background(), 110*time.Minute)
	defer cancel()
	var pend []*ledgerclient.PendingTx
	for range ndev {
		key, tx := lgw.NewDevice(b, "env")
		p, err := client.Broadcast(ctx, tx)
		if err != nil {
			b.Fatal(err)
		}
		pend = append(pend, p)
		s.devs = append(s.devs, key)
		s.seqs = append(s.seqs, 0)
	}
	for _, p := range pend {
		if _, err := p.Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
	s.cfg = gateway.DefaultConfig()
	s.cfg.DataDir = b.TempDir()
	s.cfg.KeyPath = "unused-signer-given"
	s.cfg.MQTT = gateway.MQTTConfig{TCP: "127.0.0.1:0"}
	s.cfg.HTTP.Addr = "127.0.0.1:0"
	s.cfg.LedgerRPC = node.RPC
	s.start()

	var stored int64
	for _, frac := range []float64{0.1, 0.2, 0.5, 1} {
		target := int64(float64(total) * frac)
		t0 := time.Now()
		n := s.generate(target-stored, nil)
		genS := time.Since(t0).Seconds()
		stored += n
		s.waitAnchored(10 * time.Minute)
		p := point{Records: uint64(stored), GenRecordsPerS: float64(n) / genS, LoadAvgAtPoint: loadAvg()}
		last, _ := s.g.Anchoring().Batches.Last()
		p.Batches = last.Seq
		p.StopSeconds = s.stop().Seconds()
		p.DiskBytes = diskUsage(s.cfg.DataDir)
		p.BytesPerRecord = float64(p.DiskBytes) / float64(stored)
		p.RestartSeconds = s.start().Seconds()
		api := "http://" + s.g.HTTPAddr()
		p.ProofColdMs = getMs(b, api+"/v1/records/1/proof")
		var warm, newest []float64
		for range 5 {
			warm = append(warm, getMs(b, api+"/v1/records/1/proof"))
			newest = append(newest, getMs(b, fmt.Sprintf("%s/v1/records/%d/proof", api, stored)))
		}
		p.ProofWarmMs, p.ProofNewestMs = median(warm), median(newest)
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		p.HeapAllocMB = float64(ms.HeapAlloc) / (1 << 20)
		res.Points = append(res.Points, p)
		b.Logf("%d records: generated at %.0f records/s, %d batches, disk %.1f MB (%.0f B/record), stop %.2f s, restart %.2f s, oldest proof cold %.1f ms warm %.1f ms, newest %.1f ms (load %s)",
			p.Records, p.GenRecordsPerS, p.Batches, float64(p.DiskBytes)/1e6, p.BytesPerRecord, p.StopSeconds, p.RestartSeconds,
			p.ProofColdMs, p.ProofWarmMs, p.ProofNewestMs, p.LoadAvgAtPoint)
	}
	last := res.Points[len(res.Points)-1]
	res.RecordsPerBatch = float64(last.Records) / float64(last.Batches)

	// Audit throughput over ~auditN records in the middle of the store,
	// chosen by the batches' time windows.
	api := "http://" + s.g.HTTPAddr()
	mid := uint64(stored / 2)
	from, err := s.g.Store().Get(mid)
	if err != nil {
		b.Fatal(err)
	}
	to, err := s.g.Store().Get(min(uint64(stored), mid+uint64(auditN)))
	if err != nil {
		b.Fatal(err)
	}
	var out bytes.Buffer
	t0 := time.Now()
	findings, err := audit.Run(ctx, audit.Options{Gateway: lgw.DID(), Ledger: node.RPC, API: api, From: from.Recv, To: to.Recv, Out: &out})
	res.AuditSeconds = time.Since(t0).Seconds()
	if err != nil || len(findings) > 0 {
		b.Fatalf("audit: %v %v\n%s", err, findings, out.String())
	}
	if m := regexp.MustCompile(`checked \d+ batches, (\d+) records`).FindStringSubmatch(out.String()); m != nil {
		res.AuditRecords, _ = strconv.ParseUint(m[1], 10, 64)
	}
	res.AuditPerSec = float64(res.AuditRecords) / res.AuditSeconds
	b.Logf("audit: %d records in %.1f s: %.0f records/s", res.AuditRecords, res.AuditSeconds, res.AuditPerSec)

	// Ingest alone, during a full audit, during an export.
	ingest := func(what string, reader func(ctx context.Context) int64) ingestRun {
		stop := make(chan struct{})
		rctx, rcancel := context.WithCancel(ctx)
		var read atomic.Int64
		var rwg sync.WaitGroup
		if reader != nil {
			rwg.Add(1)
			go func() { defer rwg.Done(); read.Store(reader(rctx)) }()
		}
		timer := time.AfterFunc(time.Duration(ingestSecs)*time.Second, func() { close(stop) })
		defer timer.Stop()
		t0 := time.Now()
		n := s.generate(1<<40, stop)
		el := time.Since(t0).Seconds()
		rcancel()
		rwg.Wait()
		stored += n
		r := ingestRun{What: what, Seconds: el, Records: n, RecordsPerSec: float64(n) / el, ReaderPerSec: float64(read.Load()) / el}
		b.Logf("ingest %s: %.0f records/s (reader %.0f records/s)", what, r.RecordsPerSec, r.ReaderPerSec)
		return r
	}
	res.Ingest = append(res.Ingest, ingest("alone", nil))
	// The records of the audited window by batch, to count what a
	// cancelled audit had checked (audit.Options.Progress reports the
	// batches walked).
	windowCount := map[uint64]uint64{}
	for seq := uint64(1); ; seq++ {
		sb, err := s.g.Anchoring().Batches.Get(seq)
		if err != nil {
			break
		}
		h, err := sb.ParsedHeader()
		if err != nil {
			b.Fatal(err)
		}
		if !h.To.Before(from.Recv) && !h.From.After(to.Recv) {
			windowCount[seq] = h.Count
		}
	}
	res.Ingest = append(res.Ingest, ingest("during audits", func(ctx context.Context) int64 {
		// The audit of the same ~auditN records, again and again.
		var n int64
		for ctx.Err() == nil {
			var o bytes.Buffer
			var walked atomic.Uint64
			_, err := audit.Run(ctx, audit.Options{Gateway: lgw.DID(), Ledger: node.RPC, API: api, From: from.Recv, To: to.Recv, Out: &o,
				Progress: func(done, _ uint64) { walked.Store(done) }})
			if err != nil {
				for seq, c := range windowCount {
					if seq <= walked.Load() {
						n += int64(c)
					}
				}
				break
			}
			n += int64(res.AuditRecords)
		}
		return n
	}))
	res.Ingest = append(res.Ingest, ingest("during an export", func(ctx context.Context) int64 {
		var n int64
		for from := uint64(1); ctx.Err() == nil; from += 1000 {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v1/records?from_gseq=%d&to_gseq=%d", api, from, from+999), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				break
			}
			var ans httpapi.RangeAnswer
			err = json.NewDecoder(resp.Body).Decode(&ans)
			resp.Body.Close()
			if err != nil || len(ans.Records) == 0 {
				break
			}
			n += int64(len(ans.Records))
		}
		return n
	}))
	s.waitAnchored(10 * time.Minute)
	s.stop()

	// kill -9 of a process writing to the store, then the restart.
	res.Kill9Records = kill9Writer(b, s)
	res.Kill9RestartS = s.start().Seconds()
	b.Logf("restart after kill -9 (the child wrote %d records): %.2f s", res.Kill9Records, res.Kill9RestartS)
	s.stop()

	// Retention: archive the oldest records (gateway stopped), the space it
	// gives back, and proofs from the archive file.
	res.Archive = archiveOld(b, s, node, lgw, uint64(envInt("EDGEANCHOR_BENCH_ARCHIVE_RECORDS", 1_000_000)))
	b.Logf("archive of %d records (%d batches): %.1f s (%.0f records/s), file %.1f MB (%.0f B/record), store %.1f -> %.1f MB; proof from the archive: first record %.0f ms, last %.0f ms",
		res.Archive.Records, res.Archive.Batches, res.Archive.Seconds, float64(res.Archive.Records)/res.Archive.Seconds,
		float64(res.Archive.FileBytes)/1e6, float64(res.Archive.FileBytes)/float64(res.Archive.Records),
		float64(res.Archive.StoreBytesBefore)/1e6, float64(res.Archive.StoreBytesAfter)/1e6, res.Archive.ProofFirstMs, res.Archive.ProofLastMs)

	res.TotalSeconds = time.Since(start).Seconds()
	res.LoadAvgTo = loadAvg()
	writeResults(b, outDir, &res)
}

func mustPEM(b *testing.B, priv *sm2.PrivateKey) []byte {
	pem, err := device.MarshalPrivateKeyPEM(priv)
	if err != nil {
		b.Fatal(err)
	}
	return pem
}

func writeResults(b *testing.B, dir string, res *result) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	out, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "store.json"), append(out, '\n'), 0o644); err != nil {
		b.Fatal(err)
	}
	var x, restart, disk, cold, warm []float64
	for _, p := range res.Points {
		x = append(x, float64(p.Records)/1e6)
		restart = append(restart, p.RestartSeconds)
		disk = append(disk, p.BytesPerRecord)
		cold = append(cold, p.ProofColdMs)
		warm = append(warm, p.ProofWarmMs)
	}
	for _, pl := range []struct {
		file, title, y string
		series         []plot.Series
	}{
		{"store-restart.png", "Gateway restart after a clean stop", "seconds", []plot.Series{{Name: "restart", X: x, Y: restart}}},
		{"store-disk.png", "Store disk use per record", "bytes per record", []plot.Series{{Name: "disk/record", X: x, Y: disk}}},
		{"store-proof.png", "Proof bundle of the oldest record (HTTP)", "ms", []plot.Series{{Name: "first after restart", X: x, Y: cold}, {Name: "warm (median of 5)", X: x, Y: warm}}},
	} {
		if err := plot.Lines(filepath.Join(dir, pl.file), pl.title, "records stored (millions)", pl.y, pl.series...); err != nil {
			b.Fatal(err)
		}
	}
	fmt.Printf("store bench results (%s):\n%s\n", filepath.Join(dir, "store.json"), out)
}

// kill9Writer runs a child process (this test binary, TestStoreKill9Child)
// that opens the stopped gateway's store and appends records until it is
// killed with SIGKILL after 2 s of writing; it returns how many it wrote.
func kill9Writer(b *testing.B, s *site) uint64 {
	b.Helper()
	keyPath := filepath.Join(b.TempDir(), "gw.pem")
	if err := os.WriteFile(keyPath, s.gwPEM, 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestStoreKill9Child$", "-test.count=1")
	cmd.Env = append(os.Environ(), "EDGEANCHOR_STORE_CHILD="+filepath.Join(s.cfg.DataDir, "records")+"|"+keyPath)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var written uint64
	deadline := time.Now().Add(2 * time.Minute)
	writing := time.Time{}
	for sc.Scan() {
		if n, err := strconv.ParseUint(string(bytes.TrimPrefix(sc.Bytes(), []byte("written "))), 10, 64); err == nil {
			written = n
			if writing.IsZero() {
				writing = time.Now()
			}
		}
		if !writing.IsZero() && time.Since(writing) > 2*time.Second || time.Now().After(deadline) {
			break
		}
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if written == 0 {
		b.Fatal("the kill -9 child wrote nothing")
	}
	return written
}

// TestStoreKill9Child is the child process of kill9Writer: it appends
// records of one device to the store until killed, printing the count.
func TestStoreKill9Child(t *testing.T) {
	v := os.Getenv("EDGEANCHOR_STORE_CHILD")
	if v == "" {
		t.Skip("run by BenchmarkStoreGrowth as a child process")
	}
	dir, keyPath, _ := bytes.Cut([]byte(v), []byte("|"))
	signer, err := device.LoadKeySigner(string(keyPath))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(string(dir), store.Options{Signer: signer, Claims: batch.Claims()})
	if err != nil {
		t.Fatal(err)
	}
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	d := device.NewKeySigner(priv)
	var waits []func() (*store.Record, bool, error)
	for seq := uint64(1); ; seq++ {
		body, err := device.NewBody(d.DID(), seq, time.Now(), device.KindDust, map[string]any{"pm25_ugm3": 10.5, "pm10_ugm3": 30.5, "noise_dba": 55.25})
		if err != nil {
			t.Fatal(err)
		}
		env, err := device.Seal(d, body)
		if err != nil {
			t.Fatal(err)
		}
		w, err := st.Enqueue(context.Background(), store.Pending{DID: d.DID(), Seq: seq, Kind: device.KindDust, Envelope: env, EnvHash: anchor.SM3(env)})
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, w)
		if len(waits) >= 256 {
			for _, w := range waits {
				if _, _, err := w(); err != nil {
					t.Fatal(err)
				}
			}
			waits = waits[:0]
			fmt.Printf("written %d\n", seq)
		}
	}
}
