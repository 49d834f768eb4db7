package benchkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"gopkg.in/yaml.v3"

	"github.com/edgeanchor/edgeanchor/broker"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
)

// Environment of the gateway role.
const (
	DevicesEnv = "EDGEANCHOR_BENCH_DEVICES" // JSON file: [{"did","pub"(b64 SPKI DER),"kind"}]
	DataEnv    = "EDGEANCHOR_BENCH_DATA"    // data directory
	// ConfigEnv: YAML in the gateway's config format laid over the role's
	// configuration (e.g. "limits: {max_connections: 25000}").
	ConfigEnv = "EDGEANCHOR_BENCH_GATEWAY_CONFIG"
	// ProfileEnv, when set in the environment of `make bench`, makes the
	// gateway role write a CPU profile of its whole life there (one file per
	// gateway run, suffixed with its pid): go tool pprof -top <file>.
	profileEnv = "EDGEANCHOR_BENCH_CPUPROFILE"
	// HeapEnv: the gateway role writes an in-use heap profile there every
	// 5 s (the last one written under load is the one to read).
	heapEnv = "EDGEANCHOR_BENCH_HEAPPROFILE"
	// SmapsEnv: the gateway role writes its resident memory by mapping
	// (from /proc/self/smaps: heap, stacks, each Badger file) there every
	// 5 s, to see what the RSS is made of.
	smapsEnv = "EDGEANCHOR_BENCH_SMAPS"
)

// smapsSummaries writes the resident kB per mapping name to path every 5 s
// until ctx ends.
func smapsSummaries(ctx context.Context, path string) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		raw, err := os.ReadFile("/proc/self/smaps")
		if err != nil {
			return
		}
		rss := map[string]int{}
		name := ""
		for _, line := range strings.Split(string(raw), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) >= 5 && strings.Contains(f[0], "-"):
				name = "[anon]"
				if len(f) >= 6 {
					name = filepath.Base(f[5])
				}
			case len(f) == 3 && f[0] == "Rss:":
				kb, _ := strconv.Atoi(f[1])
				rss[name] += kb
			}
		}
		names := slices.Collect(maps.Keys(rss))
		slices.SortFunc(names, func(a, b string) int { return rss[b] - rss[a] })
		var out strings.Builder
		for _, n := range names {
			if rss[n] > 0 {
				fmt.Fprintf(&out, "%8d kB  %s\n", rss[n], n)
			}
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		fmt.Fprintf(&out, "go: heap in use %d kB, heap idle not released %d kB, stacks %d kB, other runtime %d kB, goroutines %d, GC cycles %d\n",
			ms.HeapInuse>>10, (ms.HeapIdle-ms.HeapReleased)>>10, ms.StackInuse>>10,
			(ms.MSpanInuse+ms.MCacheInuse+ms.BuckHashSys+ms.GCSys+ms.OtherSys)>>10, runtime.NumGoroutine(), ms.NumGC)
		_ = os.WriteFile(path, []byte(out.String()), 0o644)
	}
}

// heapProfiles writes a heap profile to path every 5 s until ctx ends.
func heapProfiles(ctx context.Context, path string) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if f, err := os.Create(path); err == nil {
			_ = pprof.Lookup("heap").WriteTo(f, 0)
			_ = f.Close()
		}
	}
}

// Site is the site of the benchmark's gateway and devices.
const Site = "site-a"

// Device is one device of the gateway role's static registry.
type Device struct {
	DID  device.DID `json:"did"`
	Pub  []byte     `json:"pub"`
	Kind string     `json:"kind"`
}

// runGateway runs the real gateway (gateway.New: broker with the SM2 auth,
// ACL and ingest hooks, Badger store with group commit, receipts, HTTP API)
// with its devices in a static registry instead of the ledger-following
// identity cache: registering 1,000 devices through the ledger is not what
// this benchmark measures. Badger is tuned by the gateway's defaults.
func runGateway(ctx context.Context, ready func(...string)) error {
	if os.Getenv(heapEnv) != "" {
		// Small per-connection objects are what a many-device run is
		// about: sample every 16 KiB allocated, not every 512 KiB.
		runtime.MemProfileRate = 16 << 10
	}
	raw, err := os.ReadFile(os.Getenv(DevicesEnv))
	if err != nil {
		return err
	}
	var devs []Device
	if err := json.Unmarshal(raw, &devs); err != nil {
		return err
	}
	reg := broker.NewStaticRegistry()
	for _, d := range devs {
		pub, err := device.ParsePublicKeyDER(d.Pub)
		if err != nil {
			return err
		}
		reg.Put(broker.DeviceInfo{DID: d.DID, Pub: pub, Kind: d.Kind, Site: Site})
	}
	// The gateway's key lives beside its store, so that a gateway
	// restarted on the same data directory (the reconnect storm) is the
	// same gateway.
	keyPath := filepath.Join(os.Getenv(DataEnv), "bench-gateway-key.pem")
	priv, err := device.ReadPrivateKeyFile(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		if priv, err = device.GenerateKey(); err == nil {
			err = device.WritePrivateKeyFile(keyPath, priv)
		}
	}
	if err != nil {
		return err
	}
	cfg := gateway.DefaultConfig()
	cfg.DataDir = os.Getenv(DataEnv)
	cfg.KeyPath = "unused"
	cfg.Site = Site
	cfg.MQTT.TCP, cfg.MQTT.WS, cfg.MQTT.TLS = "127.0.0.1:0", "", ""
	cfg.HTTP.Addr = "127.0.0.1:0"
	cfg.Limits.DeviceRate = 0 // measure the pipeline, not the flood limit
	// Every simulated device connects from 127.0.0.1: no connect limits.
	cfg.Limits.ConnectSourceRate, cfg.Limits.ConnectRate = 0, 0
	cfg.Limits.MaxConnections = 5000
	cfg.Limits.MaxInFlight = 32 << 10
	if y := os.Getenv(ConfigEnv); y != "" {
		if err := yaml.Unmarshal([]byte(y), &cfg); err != nil {
			return fmt.Errorf("%s: %w", ConfigEnv, err)
		}
	}
	// The Go runtime's figures (heap, stacks, goroutines) beside the
	// gateway's own, as edgeanchor gateway serves them.
	metrics := prometheus.NewRegistry()
	metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	g, err := gateway.New(cfg, gateway.Deps{
		Logger:     slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
		Signer:     device.NewKeySigner(priv),
		Registry:   reg,
		Registerer: metrics,
		Gatherer:   metrics,
	})
	if err != nil {
		return fmt.Errorf("gateway.New: %w", err)
	}
	if p := os.Getenv(profileEnv); p != "" {
		f, err := os.Create(fmt.Sprintf("%s.%d", p, os.Getpid()))
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if p := os.Getenv(heapEnv); p != "" {
		go heapProfiles(ctx, fmt.Sprintf("%s.%d", p, os.Getpid()))
	}
	if p := os.Getenv(smapsEnv); p != "" {
		go smapsSummaries(ctx, fmt.Sprintf("%s.%d", p, os.Getpid()))
	}
	errc := make(chan error, 1)
	go func() { errc <- g.Run(ctx) }()
	ready(g.Broker().Addr("tcp"), g.HTTPAddr())
	return <-errc
}

// WriteDevices writes the devices of signers (all of record kind "env") as
// the gateway role's registry file in a temporary directory of tb, and
// returns the file's name.
func WriteDevices(tb testing.TB, signers []*device.KeySigner) string {
	tb.Helper()
	devs := make([]Device, len(signers))
	for i, s := range signers {
		der, err := device.MarshalPublicKeyDER(s.Public())
		if err != nil {
			tb.Fatal(err)
		}
		devs[i] = Device{DID: s.DID(), Pub: der, Kind: "env"}
	}
	raw, err := json.Marshal(devs)
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(tb.TempDir(), "devices.json")
	if err := os.WriteFile(p, raw, 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}
