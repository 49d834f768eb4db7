package portal

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/gateway/gatewaytest"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// env is a real site (gatewaytest: ledger node, an env and a survey
// device, an in-process gateway with anchoring whose batches are cut by the
// test, as the audit command's tests have them) and a second member of the
// consortium that no gateway runs.
type env struct {
	*gatewaytest.Site
	t     *testing.T
	lgw2  *ledgertest.Gateway // a second member, anchored by the test (no gateway runs it)
	trust string              // trust file path
}

func newEnv(t *testing.T) *env {
	t.Helper()
	lgw2 := ledgertest.NewGateway(t, "site-b")
	s := gatewaytest.Start(t, gatewaytest.Options{Devices: []string{"env", "survey"}, Members: []*ledgertest.Gateway{lgw2}})
	e := &env{Site: s, t: t, lgw2: lgw2}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tr, err := s.Client.ExportTrust(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.trust = filepath.Join(t.TempDir(), "trust.json")
	if err := evidence.WriteTrustFile(e.trust, tr); err != nil {
		t.Fatal(err)
	}
	return e
}

var kinds = []string{"env.dust", "survey.point"}

// add stores the next reading of device i, with extra in its values.
func (e *env) add(i int, extra string) uint64 { return e.addKind(i, extra, kinds[i]) }

// addKind is add with the record kind the gateway stores (and serves) for
// it set to kind.
func (e *env) addKind(i int, extra, kind string) uint64 {
	e.t.Helper()
	vals := map[string]any{"pm25_ugm3": 10.5, "pm10_ugm3": 30.0}
	if i == 1 {
		vals = map[string]any{"point": "P1", "h_m": 12.5}
	}
	if extra != "" {
		vals["note"] = extra
	}
	p := e.Next(i, 0, time.Now(), kinds[i], vals)
	p.Kind = kind
	return e.Append(p).GSeq
}

// bundle fetches record gseq's proof bundle from the gateway's API.
func (e *env) bundle(gseq uint64) []byte {
	e.t.Helper()
	var b []byte
	testutil.WaitFor(e.t, 30*time.Second, fmt.Sprintf("proof of gseq %d", gseq), func() (err error) {
		b, err = testutil.HTTPGet(fmt.Sprintf("http://%s/v1/records/%d/proof", e.G.HTTPAddr(), gseq))
		return err
	})
	return b
}

// deleteRecord removes record gseq from the gateway's store behind the
// running gateway's back.
func (e *env) deleteRecord(gseq uint64) {
	e.t.Helper()
	err := e.G.Store().DB().Update(func(txn *badger.Txn) error {
		return txn.Delete(binary.BigEndian.AppendUint64([]byte("r/"), gseq))
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// startPortal starts a portal on cfg (defaults filled from e) and returns
// it; it stops at the end of the test.
func (e *env) startPortal(t *testing.T, edit func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.LedgerRPC = e.Node.RPC
	cfg.TrustPath = e.trust
	cfg.Gateways = []GatewayAPI{{DID: e.LGW.DID(), URL: "http://" + e.G.HTTPAddr()}}
	cfg.PageSize = 3
	if edit != nil {
		edit(&cfg)
	}
	s, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("portal Run: %v", err)
		}
		_ = s.Close()
	})
	testutil.WaitUntil(t, 10*time.Second, "portal listening", func() bool { return s.Addr() != "" })
	return s
}

// browser is one headless Chromium for the package's tests; it records
// console errors and every request that leaves the origin.
type browser struct {
	ctx     context.Context
	mu      sync.Mutex
	errs    []string
	foreign []string
	origin  string
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	if _, err := os.Stat("/usr/bin/chromium"); err != nil {
		t.Fatalf("chromium is needed (apt-get install chromium): %v", err)
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath("/usr/bin/chromium"),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("ignore-certificate-errors", true), // the TLS test's self-signed certificate
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	b := &browser{}
	actx, acancel := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(b.event))
	t.Cleanup(func() { cancel(); acancel() })
	b.ctx = ctx
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return b
}

// event runs in the tab's loop: it only records.
func (b *browser) event(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert {
			var args []string
			for _, a := range ev.Args {
				args = append(args, string(a.Value)+a.Description)
			}
			b.errs = append(b.errs, fmt.Sprintf("console.%s %q", ev.Type, args))
		}
	case *runtime.EventExceptionThrown:
		b.errs = append(b.errs, "exception: "+ev.ExceptionDetails.Text)
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError {
			b.errs = append(b.errs, "log: "+ev.Entry.Text+" "+ev.Entry.URL)
		}
	case *network.EventRequestWillBeSent:
		u := ev.Request.URL
		// data: URLs are inline (the browser's own icons of form
		// controls): no request leaves the machine.
		if b.origin != "" && !hasOrigin(u, b.origin) && u != "about:blank" && !strings.HasPrefix(u, "data:") {
			b.foreign = append(b.foreign, u)
		}
	}
}

func hasOrigin(u, origin string) bool {
	return strings.HasPrefix(u, origin) && (len(u) == len(origin) || u[len(origin)] == '/')
}

// use points the origin check at origin and clears what was recorded.
func (b *browser) use(origin string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.origin, b.errs, b.foreign = origin, nil, nil
}

// clean fails t if the browser saw a console error or a request outside
// the origin since the last check.
func (b *browser) clean(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.errs) > 0 {
		t.Errorf("console errors: %q", b.errs)
	}
	if len(b.foreign) > 0 {
		t.Errorf("requests outside %s: %q", b.origin, b.foreign)
	}
	b.errs, b.foreign = nil, nil
}

// cleanBut is clean, but console entries that contain one of allowed
// (the log lines of answers the test asked for) are not errors.
func (b *browser) cleanBut(t *testing.T, allowed ...string) {
	t.Helper()
	b.mu.Lock()
	var keep []string
	for _, e := range b.errs {
		ok := false
		for _, a := range allowed {
			ok = ok || strings.Contains(e, a)
		}
		if !ok {
			keep = append(keep, e)
		}
	}
	b.errs = keep
	b.mu.Unlock()
	b.clean(t)
}

func (b *browser) do(t *testing.T, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		t.Fatal(err)
	}
}

// open loads url and waits for sel.
func (b *browser) open(t *testing.T, url, sel string) {
	t.Helper()
	b.do(t, chromedp.Navigate(url), chromedp.WaitVisible(chromedp.CSS(sel)))
}

// submit clicks sel and waits for the next page: the old one is marked
// first, so a node that both pages have does not stand for the new one.
func submit(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Steps(
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Evaluate[bool](`document.body.dataset.stale = "1", true`)(ctx, t)
			return err
		}),
		chromedp.Click(chromedp.CSS(sel)),
		chromedp.WaitReady(chromedp.CSS("body:not([data-stale])")),
	)
}

// text is the text of the node sel.
func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	return get(t, b, chromedp.Text(chromedp.CSS(sel), chromedp.NodeVisible))
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](t *testing.T, b *browser, expr string) T {
	t.Helper()
	return get(t, b, chromedp.Evaluate[T](expr))
}

func get[T any](t *testing.T, b *browser, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// screenshot saves the page as portal-name.png in the directory
// PORTAL_SCREENSHOTS names (docs/ when docs/portal.md's screenshots are
// made again), after the page's animations.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	dir := os.Getenv("PORTAL_SCREENSHOTS")
	if dir == "" {
		return
	}
	b.do(t, chromedp.Sleep(1500*time.Millisecond))
	png := get(t, b, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(dir, "portal-"+name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
