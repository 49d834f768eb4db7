package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/ledger"
)

func testOptions(t *testing.T, dir string) Options {
	o := DefaultOptions()
	o.Dir = dir
	o.Devices = 6
	o.Rate = 2
	// The demo is started again on the same ports (TestRunAnchorsABatch's
	// second start, TestGatewayOutage's restart): ports that no outgoing
	// connection can take in between.
	ports := testutil.StablePorts(t, 7)
	o.MQTTPort, o.WSPort, o.HTTPPort = ports[0], ports[1], ports[2]
	o.P2PPort, o.RPCPort, o.PromPort = ports[3], ports[4], ports[5]
	o.PortalPort = ports[6]
	o.Interval = 200 * time.Millisecond
	o.LineEvery = time.Second
	return o
}

// startLedger prepares o's state and starts its ledger node, stopped at the
// end of the test; the context it returns ends after within.
func startLedger(t *testing.T, o Options, within time.Duration) (context.Context, *system) {
	t.Helper()
	s, err := prepare(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.closeLog)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	t.Cleanup(cancel)
	node, err := ledger.StartNode(ctx, s.p.ledger, ledger.NodeOptions{Logger: s.log.With("component", "ledger")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Stop() })
	return ctx, s
}

// startTestGateway starts the demo's gateway under ctx; the func it returns
// stops it and reports an error it stopped with.
func (s *system) startTestGateway(t *testing.T, ctx context.Context) func() {
	t.Helper()
	gctx, gcancel := context.WithCancel(ctx)
	done, err := startGateway(gctx, s.gatewayConfig(), s.signer, s.log.With("component", "gateway"), prometheus.NewRegistry())
	if err != nil {
		gcancel()
		t.Fatalf("start gateway: %v", err)
	}
	return func() {
		gcancel()
		if err := <-done; err != nil {
			t.Errorf("gateway stopped with %v", err)
		}
	}
}

// TestRunAnchorsABatch drives the code path of `make run` (demo.Run) with a
// temporary state directory and free ports and waits, at most 60 s, for a
// batch of the fleet's records to be anchored on the ledger; then it stops
// the demo and starts it again on the same state.
func TestRunAnchorsABatch(t *testing.T) {
	ea := testbin.Path(t, "./cmd/edgeanchor") // built before the clock starts
	dir := t.TempDir()
	o := testOptions(t, dir)
	var progress testutil.SyncBuffer
	o.Progress = &progress
	// run starts the demo, waits (at most 60 s) until the status satisfies
	// until, calls during while the demo still runs, then stops it.
	run := func(what string, until func(Status) bool, during func()) Status {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		var (
			mu   sync.Mutex
			last Status
			met  = make(chan struct{})
			once sync.Once
		)
		o.OnStatus = func(s Status) {
			mu.Lock()
			defer mu.Unlock()
			last = s
			if until(s) {
				once.Do(func() { close(met) })
			}
		}
		errc := make(chan error, 1)
		go func() { errc <- Run(ctx, o) }()
		select {
		case <-met:
		case err := <-errc:
			t.Fatalf("%s: Run returned early: %v\n%s", what, err, progress.String())
		case <-time.After(60 * time.Second):
			cancel()
			<-errc
			mu.Lock()
			defer mu.Unlock()
			t.Fatalf("%s: not reached within 60 s; last status %+v\n%s", what, last, progress.String())
		}
		if during != nil {
			during()
		}
		cancel()
		if err := <-errc; err != nil {
			t.Fatalf("%s: Run: %v", what, err)
		}
		mu.Lock()
		defer mu.Unlock()
		return last
	}
	// The command the banner prints, as a user would run it: fetch record
	// 1's proof bundle and verify it offline with bin/edgeanchor.
	verifyRecord1 := func() {
		base := fmt.Sprintf("http://127.0.0.1:%d", o.HTTPPort)
		proof := filepath.Join(dir, "proof.json")
		var body []byte
		testutil.WaitFor(t, 30*time.Second, "proof of record 1", func() (err error) {
			body, err = testutil.HTTPGet(base + "/v1/records/1/proof")
			return err
		})
		if err := os.WriteFile(proof, body, 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(ea, "verify", proof, "--trust", filepath.Join(dir, "trust.json")).CombinedOutput()
		if err != nil {
			t.Fatalf("edgeanchor verify: %v\n%s", err, out)
		}
		t.Logf("edgeanchor verify:\n%s", out)

		// The portal the banner names shows the demo's gateway.
		portalURL := fmt.Sprintf("http://127.0.0.1:%d/", o.PortalPort)
		if !strings.Contains(progress.String(), "portal:      "+portalURL) {
			t.Errorf("the banner does not name the portal %s:\n%s", portalURL, progress.String())
		}
		page, err := testutil.HTTPGet(portalURL + "consortium")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(page), "site-a") || !strings.Contains(string(page), "<td>member</td>") {
			t.Errorf("the portal's consortium page lacks the gateway:\n%.2000s", page)
		}

		// The ledger's metrics are on its own listener, not on the
		// gateway's /metrics.
		gw, err := testutil.HTTPGet(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"edgeanchor_ledger_anchors_total", "edgeanchor_ledger_registrations_total", "edgeanchor_ledger_refused_total", "cometbft_"} {
			if strings.Contains(string(gw), name) {
				t.Errorf("the gateway's /metrics holds the ledger's %s", name)
			}
		}
		var led []byte
		testutil.WaitFor(t, 30*time.Second, "ledger metrics with an anchor", func() (err error) {
			led, err = testutil.HTTPGet(fmt.Sprintf("http://127.0.0.1:%d/metrics", o.PromPort))
			if err == nil && !strings.Contains(string(led), "edgeanchor_ledger_anchors_total{") {
				err = errors.New("no edgeanchor_ledger_anchors_total series yet")
			}
			return err
		})
		if !strings.Contains(string(led), "cometbft_consensus_height") {
			t.Error("the ledger's /metrics lacks CometBFT's metrics")
		}
	}
	first := run("first start", func(s Status) bool { return s.Batches >= 1 && s.Online == o.Devices }, verifyRecord1)
	if first.Accepted == 0 || first.Height < 2 {
		t.Fatalf("status %+v: want records stored and a growing ledger", first)
	}
	out := progress.String()
	for _, want := range []string{"/metrics", "/v1/records/1", "edgeanchor verify proof.json --trust " + dir + "/trust.json", "batches anchored"} {
		if !strings.Contains(out, want) {
			t.Fatalf("progress output lacks %q:\n%s", want, out)
		}
	}
	// A second start reuses the ledger, the gateway's store and the
	// enrolled devices (no new tokens: the devices reconnect with ea1).
	// It runs until the restarted ledger has committed past the first
	// run's last height (a reset ledger would start again from 1).
	second := run("second start", func(s Status) bool {
		return s.Online == o.Devices && s.Batches >= 1 && s.Accepted > 0 && s.Height > first.Height
	}, nil)
	if second.Height <= first.Height {
		t.Fatalf("ledger height %d after restart, was %d", second.Height, first.Height)
	}
}

func TestRunRefusesATakenPort(t *testing.T) {
	o := testOptions(t, filepath.Join(t.TempDir(), "var"))
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", itoa(o.HTTPPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	err = Run(context.Background(), o)
	t.Log(err)
	if !errors.Is(err, ErrPortTaken) || !strings.Contains(err.Error(), itoa(o.HTTPPort)) || !strings.Contains(err.Error(), "HTTP API") || !strings.Contains(err.Error(), "--http-port") {
		t.Fatalf("err %v: want ErrPortTaken naming the HTTP port %d", err, o.HTTPPort)
	}
	if _, err := os.Stat(o.Dir); !os.IsNotExist(err) {
		t.Fatalf("state directory made although the demo did not start: %v", err)
	}
}

// A bad option (an unknown profile, no devices, a bad site) is refused
// before anything is made: no state directory, no ledger, no gateway.
func TestRunRefusesBadOptionsFirst(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		mod        func(*Options)
	}{
		{"profile", `"foo"`, func(o *Options) { o.Profile = "foo" }},
		{"devices", "devices 0", func(o *Options) { o.Devices = 0 }},
		{"rate", "rate -1", func(o *Options) { o.Rate = -1 }},
		{"site", "site", func(o *Options) { o.Site = "Site A" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(t, filepath.Join(t.TempDir(), "var"))
			tc.mod(&o)
			err := Run(context.Background(), o)
			if !errors.Is(err, ErrOptions) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v: want ErrOptions naming %s", err, tc.want)
			}
			if _, err := os.Stat(o.Dir); !os.IsNotExist(err) {
				t.Fatalf("state directory made for a refused option: %v", err)
			}
		})
	}
}

// TestDocsShowTheBanner keeps docs/run.md honest: the banner it shows is
// the one `make run` prints with the default options.
func TestDocsShowTheBanner(t *testing.T) {
	doc, err := os.ReadFile("../../docs/run.md")
	if err != nil {
		t.Fatal(err)
	}
	o := DefaultOptions()
	o.defaults()
	s := &system{o: o, p: newPaths(o.Dir), rpc: o.RPCPort, prom: o.PromPort}
	if !strings.Contains(string(doc), s.banner()) {
		t.Fatalf("docs/run.md does not show the banner make run prints:\n%s", s.banner())
	}
}
