package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// readyz fetches /readyz of an in-process gateway and times the answer.
func readyz(t *testing.T, addr string) (int, map[string]string, time.Duration) {
	t.Helper()
	start := time.Now()
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]string
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("/readyz body %q: %v", b, err)
	}
	return resp.StatusCode, body, took
}

// A ledger that does not answer at all (each probe runs into its 2 s
// timeout) degrades /readyz without slowing it: every answer comes from
// the background results in well under 100 ms, names the ledger, and
// stays 200 (ingest is healthy). A failing critical check makes it 503.
func TestReadyzAnswersAtOnceWhileLedgerHangs(t *testing.T) {
	t.Parallel()
	cfg := itConfig(t)
	var probes atomic.Int64
	hang := func(ctx context.Context) error {
		probes.Add(1)
		<-ctx.Done()
		return ctx.Err()
	}
	g, err := New(cfg, Deps{Logger: itLogger(), Signer: newSigner(t), LedgerPing: hang})
	if err != nil {
		t.Fatal(err)
	}
	var storageBroken atomic.Bool
	g.AddReadyCheck("part", func(context.Context) error {
		if storageBroken.Load() {
			return errors.New("part broken")
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	addr := g.HTTPAddr()
	if err := testutil.WaitHTTP(10*time.Second, "http://"+addr+"/healthz"); err != nil {
		t.Fatal(err)
	}
	// Wait until a probe has run into its timeout, then measure.
	testutil.WaitUntil(t, 20*time.Second, "the ledger probe to time out", func() bool {
		_, body, _ := readyz(t, addr)
		return strings.Contains(body["ledger"], "deadline exceeded")
	})
	// The answer never waits for the probe (each runs 2 s into its
	// timeout): the median must be under 100 ms and even the slowest,
	// on a loaded machine, far below the probe's 2 s.
	var took []time.Duration
	for range 21 {
		code, body, d := readyz(t, addr)
		took = append(took, d)
		if code != http.StatusOK || body["status"] != httpapi.StatusDegraded || body["store"] != "ok" || body["broker"] != "ok" ||
			!strings.Contains(body["ledger"], "unreachable") {
			t.Fatalf("/readyz = %d %v, want 200 degraded naming the ledger", code, body)
		}
	}
	slices.Sort(took)
	median, worst := took[len(took)/2], took[len(took)-1]
	if median >= 100*time.Millisecond || worst >= time.Second {
		t.Fatalf("/readyz took median %s, slowest %s; want < 100ms and < 1s", median, worst)
	}
	t.Logf("/readyz while the ledger hangs: median %s, slowest %s of %d (probes so far %d)", median, worst, len(took), probes.Load())

	storageBroken.Store(true)
	testutil.WaitUntil(t, 10*time.Second, "a failing critical check to make /readyz 503", func() bool {
		code, body, _ := readyz(t, addr)
		return code == http.StatusServiceUnavailable && body["status"] == httpapi.StatusNotReady && body["part"] == "part broken"
	})
	storageBroken.Store(false)
	testutil.WaitUntil(t, 10*time.Second, "/readyz to come back", func() bool {
		code, body, _ := readyz(t, addr)
		return code == http.StatusOK && body["part"] == "ok"
	})
}
