package portal

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/dgraph-io/badger/v4"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/sim/profile"
	"github.com/edgeanchor/edgeanchor/wages"
	"github.com/edgeanchor/edgeanchor/wages/wagestest"
)

// requestLog keeps every request the portal received, whole: method,
// URL, headers and body.
type requestLog struct {
	mu   sync.Mutex
	reqs []string
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s\n", r.Method, r.URL.String())
		_ = r.Header.Write(&b)
		b.Write(body)
		l.mu.Lock()
		l.reqs = append(l.reqs, b.String())
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

// carrying returns the requests that contain any of secrets.
func (l *requestLog) carrying(secrets ...string) (n int, hits []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, r := range l.reqs {
		for _, s := range secrets {
			if strings.Contains(r, s) {
				hits = append(hits, r)
			}
		}
	}
	return len(l.reqs), hits
}

// syncBuffer is a log sink the portal writes from its goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestPortalWages runs the Wages page in Chromium against a real seeded
// site (wagestest: a ledger node, a gateway with anchoring, payroll
// terminals with seeded arrears): the report finds the seeded cases, the
// filter shows one status, the CSV and JSON downloads hold the report,
// a worker's evidence pack is the one `edgeanchor wages --pack-worker`
// writes and verifies offline, names are computed in the browser from a
// salt and ID numbers that no request carries, and a record deleted from
// the gateway makes every worker cannot_conclude, naming the gseq.
func TestPortalWages(t *testing.T) {
	const devices = 2
	ws, due := wagestest.SeededMonth(t, devices)
	trustPath := filepath.Join(t.TempDir(), "trust.json")
	if err := evidence.WriteTrustFile(trustPath, ws.Trust); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.Listen = "127.0.0.1:0"
	cfg.LedgerRPC = ws.Node.RPC
	cfg.TrustPath = trustPath
	// A second gateway whose API answers markup: what it says is shown as
	// text.
	hostile := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, `<script>window.__pwned=1</script><b>bold</b>`)
	}))
	t.Cleanup(hostile.Close)
	hostileDID := device.DID("did:ea:0123456789abcdef0123456789abcdef")
	cfg.Gateways = []GatewayAPI{{DID: ws.LGW.DID(), URL: ws.API()}, {DID: hostileDID, URL: hostile.URL}}
	cfg.WageZone = "+08:00" // the simulator's site zone
	cfg.WageFloorFen = wagestest.FloorFen
	logs := &syncBuffer{}
	s, err := New(cfg, Deps{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	reqs := &requestLog{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: reqs.wrap(s.Handler()), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-served
		_ = s.Close()
	})
	base := "http://" + ln.Addr().String()

	// What the simulator seeded for the period.
	seeded := map[string]string{}
	for _, g := range ws.Gens {
		for _, c := range wagestest.SeededOf(g) {
			if c.Period == wagestest.Period {
				seeded[c.Worker] = map[string]string{profile.CaseUnpaid: wages.StatusUnpaid, profile.CaseLate: wages.StatusPaidLate,
					profile.CaseBelowFloor: wages.StatusBelowFloor, profile.CaseGhost: wages.StatusNoAttendance}[c.Case]
			}
		}
	}
	wantCases := map[string]int{}
	for _, st := range seeded {
		wantCases[st]++
	}
	if wantCases[wages.StatusUnpaid] != 2*devices || wantCases[wages.StatusPaidLate] != devices ||
		wantCases[wages.StatusBelowFloor] != devices || wantCases[wages.StatusNoAttendance] != devices {
		t.Fatalf("seeded cases %v", wantCases)
	}

	b := newBrowser(t)
	b.use(base)
	run := func() string {
		b.open(t, base+"/wages", "#wages-form")
		if v := eval[string](t, b, `document.getElementById('floor_fen').value + " " + document.getElementById('zone').value + " " + document.getElementById('due_days').value`); v != "20000 +08:00 15" {
			t.Fatalf("form defaults %q, want the portal config's", v)
		}
		b.do(t, chromedp.SetValue(chromedp.CSS("#gateway"), string(ws.LGW.DID())),
			chromedp.SetValue(chromedp.CSS("#period"), wagestest.Period),
			chromedp.SetValue(chromedp.CSS("#due"), anchor.FormatTime(due)),
			chromedp.Click(chromedp.CSS("#run")), chromedp.WaitVisible(chromedp.CSS("#wage-result")), wagesReady)
		return get(t, b, chromedp.Location())
	}
	runURL := run()
	if !regexp.MustCompile(`/wages/[0-9a-f]{24}$`).MatchString(runURL) {
		t.Fatalf("report at %s", runURL)
	}
	t.Logf("on the page: %s", b.text(t, "#wage-result .card"))
	if v := b.text(t, "#complete"); !strings.HasPrefix(v, "✓") {
		t.Fatalf("log not complete: %q", b.text(t, "#wage-result"))
	}
	// The bar ends at the last phase, all done.
	if bar := eval[string](t, b, `document.getElementById('bar').value + "/" + document.getElementById('bar').max + " " + document.getElementById('bar-label').textContent`); !regexp.MustCompile(`^(\d+)/(\d+) signatures: \d+ / \d+$`).MatchString(bar) || strings.HasPrefix(bar, "0/") {
		t.Fatalf("progress at the end: %q", bar)
	} else if m := regexp.MustCompile(`^(\d+)/(\d+)`).FindStringSubmatch(bar); m[1] != m[2] {
		t.Fatalf("progress at the end: %q", bar)
	}

	// The counts on top, and every row, are the seeded truth.
	counts := eval[map[string]string](t, b, `Object.fromEntries(Array.from(document.querySelectorAll('#counts tr[data-status]')).map(r => [r.dataset.status, r.querySelector('.count').textContent]))`)
	rows := eval[[][]string](t, b, `Array.from(document.querySelectorAll('#workers tr[data-ref]')).map(r => [r.dataset.ref, r.querySelector('.status').textContent, r.querySelector('.reason').textContent])`)
	if len(rows) < 40 {
		t.Fatalf("%d workers on the page", len(rows))
	}
	for st, n := range wantCases {
		if counts[st] != fmt.Sprint(n) {
			t.Errorf("count of %s: %q, seeded %d (counts %v)", st, counts[st], n, counts)
		}
	}
	if counts[wages.StatusCannotConclude] != "0" || counts[wages.StatusPaidOnTime] != fmt.Sprint(len(rows)-len(seeded)) {
		t.Errorf("counts %v, %d workers, %d seeded", counts, len(rows), len(seeded))
	}
	var unpaid string
	for _, r := range rows {
		want, ok := seeded[r[0]]
		if !ok {
			want = wages.StatusPaidOnTime
		}
		if r[1] != want {
			t.Errorf("worker %s: %s (%s), seeded %s", r[0], r[1], r[2], want)
		}
		if r[1] == wages.StatusUnpaid && unpaid == "" {
			unpaid = r[0]
		}
	}
	meanings := eval[map[string]string](t, b, `Object.fromEntries(Array.from(document.querySelectorAll('#counts tr[data-status]')).map(r => [r.dataset.status, r.cells[2].textContent]))`)
	for _, st := range wages.Statuses {
		if meanings[st] == "" || meanings[st] != meaning(st) {
			t.Errorf("status %s explained as %q", st, meanings[st])
		}
	}
	b.clean(t)

	// Filter in the page, then by the link without script.
	b.do(t, chromedp.Click(chromedp.CSS(`a.filter[data-status="`+wages.StatusUnpaid+`"]`)))
	shown := eval[[]string](t, b, `Array.from(document.querySelectorAll('#workers tr[data-ref]')).filter(r => !r.hidden).map(r => r.dataset.status)`)
	if len(shown) != wantCases[wages.StatusUnpaid] || shown[0] != wages.StatusUnpaid || shown[len(shown)-1] != wages.StatusUnpaid {
		t.Fatalf("filtered to unpaid: %q", shown)
	}
	b.open(t, runURL+"?status="+wages.StatusPaidLate, "#workers")
	b.do(t, wagesReady)
	shown = eval[[]string](t, b, `Array.from(document.querySelectorAll('#workers tr[data-ref]')).map(r => r.dataset.status)`)
	if len(shown) != wantCases[wages.StatusPaidLate] || shown[0] != wages.StatusPaidLate {
		t.Fatalf("?status=paid_late: %q", shown)
	}
	b.clean(t)

	// Downloads: the JSON and CSV report, and an unpaid worker's pack.
	b.open(t, runURL, "#workers")
	b.do(t, wagesReady)
	fetch := func(sel string) string {
		return get(t, b, chromedp.Evaluate[string](`fetch(document.querySelector('`+sel+`').href).then(r => r.text())`, chromedp.EvalAwaitPromise))
	}
	var rep wages.Report
	if err := json.Unmarshal([]byte(fetch("#json")), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Period != wagestest.Period || len(rep.Workers) != len(rows) || rep.Counts[wages.StatusUnpaid] != wantCases[wages.StatusUnpaid] || !rep.Complete {
		t.Fatalf("JSON report: period %s, %d workers, counts %v", rep.Period, len(rep.Workers), rep.Counts)
	}
	cr, err := csv.NewReader(strings.NewReader(fetch("#csv"))).ReadAll()
	if err != nil || len(cr) != len(rows)+1 || strings.Join(cr[0], ",") != strings.Join(wages.CSVHeader, ",") {
		t.Fatalf("CSV report: %d lines, %v", len(cr), err)
	}
	for _, line := range cr[1:] {
		if want, ok := seeded[line[0]]; ok && line[8] != want {
			t.Errorf("CSV: worker %s %s, seeded %s", line[0], line[8], want)
		}
	}
	pack := fetch(`tr[data-ref="` + unpaid + `"] a.pack`)
	res, err := wages.VerifyPack([]byte(pack), ws.Trust, nil)
	if err != nil {
		t.Fatalf("the page's pack of %s does not verify: %v", unpaid, err)
	}
	if !strings.Contains(res.Conclusion, "no wage record for "+wagestest.Period+" was anchored by") {
		t.Fatalf("pack conclusion %q", res.Conclusion)
	}
	// The same bytes as the command's pack of the same report.
	zone, _ := wages.ParseZone("+08:00")
	o := wages.Options{Gateway: ws.LGW.DID(), Period: wagestest.Period, Zone: zone, DueDays: 15, Due: due, FloorFen: wagestest.FloorFen, Trust: ws.Trust}
	ev, err := wages.Collect(context.Background(), &wages.Gateway{API: ws.API()}, o)
	if err != nil {
		t.Fatal(err)
	}
	p, err := wages.MakePack(ev, o, unpaid)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(cli, []byte(pack)) {
		t.Fatalf("the page's pack (%d bytes) is not the command's (%d bytes)", len(pack), len(cli))
	}
	b.clean(t)

	// Names: the browser computes the references; Go agrees on each.
	salt := hex.EncodeToString(ws.Salt)
	inputs := []string{"110105199001011234", "", "a", strings.Repeat("x", 55-len(ws.Salt)), strings.Repeat("y", 64-len(ws.Salt)),
		strings.Repeat("z", 200), "张三 身份证 11010519900101123X"}
	for _, id := range inputs {
		js := eval[string](t, b, fmt.Sprintf(`personRef(hexBytes(%q), %q)`, salt, id))
		if goRef := device.PersonRef(ws.Salt, id); js != goRef {
			t.Errorf("ID %q: the page computes %s, device.PersonRef %s", id, js, goRef)
		}
	}
	if abc := eval[string](t, b, `sm3(new TextEncoder().encode("abc"))`); abc != "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0" {
		t.Errorf(`sm3("abc") in the page: %s`, abc)
	}
	ghostID := "ghost:site-a:0:" + wagestest.Period + ":0" // the simulator's first terminal's wage without attendance
	ghost := device.PersonRef(ws.Salt, ghostID)
	if seeded[ghost] != wages.StatusNoAttendance {
		t.Fatalf("ghost reference %s not seeded (%q)", ghost, seeded[ghost])
	}
	const name, otherID = "Li Si", "110105199001011234"
	if inForm := eval[bool](t, b, `document.getElementById('salt').form !== null || document.getElementById('ids').form !== null || document.getElementById('salt').name !== "" || document.getElementById('ids').name !== ""`); inForm {
		t.Fatal("the salt or the ID list is part of a form")
	}
	b.do(t, chromedp.Click(chromedp.CSS("#names summary")),
		chromedp.SendKeys(chromedp.CSS("#salt"), salt),
		chromedp.SendKeys(chromedp.CSS("#ids"), ghostID+","+name+"\n"+otherID+",Nobody\n"),
		chromedp.Click(chromedp.CSS("#map-names")))
	if got := b.text(t, `tr[data-ref="`+ghost+`"] td.name`); got != name {
		t.Fatalf("name of %s: %q", ghost, got)
	}
	if got := b.text(t, "#names-result"); got != "2 ID(s), 1 matched a worker in this report" {
		t.Fatalf("names result %q", got)
	}
	b.do(t, chromedp.Click(chromedp.CSS(`a.filter[data-status="`+wages.StatusNoAttendance+`"]`)))
	if got := b.text(t, `tr[data-ref="`+ghost+`"] td.name`); got != name {
		t.Fatalf("after filtering, name of %s: %q", ghost, got)
	}
	b.screenshot(t, "wages")
	// Leave the page the way an inspector would (a link, a new run's
	// form): no request, and no log line, carries the salt or an ID.
	b.open(t, runURL+"?status="+wages.StatusPaidOnTime, "#workers")
	b.open(t, base+"/wages", "#wages-form")
	n, hits := reqs.carrying(salt, string(ws.Salt), ghostID, otherID, name)
	if len(hits) > 0 {
		t.Fatalf("%d of %d requests carry the salt or an ID:\n%s", len(hits), n, hits[0])
	}
	if n < 10 {
		t.Fatalf("only %d requests logged", n)
	}
	for _, secret := range []string{salt, ghostID, otherID, name} {
		if strings.Contains(logs.String(), secret) {
			t.Fatalf("the portal's log holds %q", secret)
		}
	}
	b.clean(t) // and no request left the portal's origin

	// The hostile gateway's answer shows as text; its markup does nothing.
	b.open(t, base+"/wages", "#wages-form")
	b.do(t, chromedp.SetValue(chromedp.CSS("#gateway"), string(hostileDID)), chromedp.SetValue(chromedp.CSS("#period"), wagestest.Period),
		chromedp.Click(chromedp.CSS("#run")), chromedp.WaitVisible(chromedp.CSS("#wage-result")))
	if msg := b.text(t, "#wage-error"); !strings.Contains(msg, `<script>window.__pwned=1</script><b>bold</b>`) {
		t.Fatalf("hostile gateway: %q", msg)
	}
	if ran := eval[bool](t, b, `window.__pwned !== undefined || document.querySelector('#wage-error b, #wage-error script') !== null`); ran {
		t.Fatal("the gateway's markup was rendered")
	}
	b.clean(t)

	// A record deleted from the gateway's store: every worker
	// cannot_conclude, the missing gseq named, no pack.
	var gone uint64
	for _, wk := range rep.Workers {
		if wk.Status == wages.StatusPaidOnTime {
			gone = wk.Wages[0].GSeq
			break
		}
	}
	if err := ws.G.Store().DB().Update(func(txn *badger.Txn) error {
		return txn.Delete(binary.BigEndian.AppendUint64([]byte("r/"), gone))
	}); err != nil {
		t.Fatal(err)
	}
	runURL2 := run()
	if v := b.text(t, "#missing"); !strings.Contains(v, fmt.Sprintf("gseq %d..%d missing", gone, gone)) {
		t.Fatalf("missing list %q, want gseq %d", v, gone)
	}
	counts = eval[map[string]string](t, b, `Object.fromEntries(Array.from(document.querySelectorAll('#counts tr[data-status]')).map(r => [r.dataset.status, r.querySelector('.count').textContent]))`)
	// The batch that lost a record is not read at all (its root cannot be
	// checked), so only workers of later batches remain: every one
	// cannot_conclude.
	statuses := eval[[]string](t, b, `Array.from(document.querySelectorAll('#workers tr[data-ref]')).map(r => r.querySelector('.status').textContent + ": " + r.querySelector('.reason').textContent)`)
	if len(statuses) == 0 || counts[wages.StatusCannotConclude] != fmt.Sprint(len(statuses)) {
		t.Fatalf("after the deletion: counts %v, rows %q", counts, statuses)
	}
	for _, st := range statuses {
		if !strings.HasPrefix(st, wages.StatusCannotConclude+": ") || !strings.Contains(st, fmt.Sprintf("gseq %d..%d missing", gone, gone)) {
			t.Fatalf("after the deletion: row %q", st)
		}
	}
	if packs := eval[int](t, b, `document.querySelectorAll('a.pack').length`); packs != 0 {
		t.Fatalf("%d pack links on an incomplete report", packs)
	}
	resp, err := http.Get(runURL2 + "/pack?worker=" + unpaid)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || !strings.Contains(string(msg), "not complete through the due date") {
		t.Fatalf("pack of an incomplete report: %s %s", resp.Status, msg)
	}
	b.clean(t)
}

// wagesReady waits until the Wages page's script has set up its handlers.
var wagesReady = chromedp.WaitReady(chromedp.CSS("body[data-wages-ready]"))

// TestWageStatusMeaningsMatchDocs: the page explains each status in the
// words of docs/wages.md's table.
func TestWageStatusMeaningsMatchDocs(t *testing.T) {
	doc, err := os.ReadFile("../docs/wages.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range wages.Statuses {
		row := fmt.Sprintf("| `%s` | %s |", st, statusMeaning[st])
		if !strings.Contains(string(doc), row) {
			t.Errorf("docs/wages.md has no row %q", row)
		}
	}
}

// TestWageFormRefusesBadInput: each bad field of the Wages form is
// refused naming it and its bound, and no report starts.
func TestWageFormRefusesBadInput(t *testing.T) {
	did := device.DID("did:ea:3feb399d1edc4dacf36a16d21361e83f")
	s := &Server{cfg: DefaultConfig(), log: slog.New(slog.DiscardHandler), gateways: map[device.DID]string{did: "http://127.0.0.1:1"},
		wageRuns: newWageRuns(), ctx: context.Background()}
	if err := s.parseTemplates(); err != nil {
		t.Fatal(err)
	}
	good := map[string]string{"gateway": string(did), "period": "2026-10", "zone": "Asia/Shanghai", "due_days": "15", "due": "", "floor_fen": "20000"}
	for _, tc := range []struct{ field, value, want string }{
		{"gateway", "gw-1", "gateway: "},
		{"gateway", "did:ea:00000000000000000000000000000000", "no record API configured for it"},
		{"period", "2026-13", `period &#34;2026-13&#34;: want YYYY-MM`},
		{"period", "<b>x</b>", `period &#34;&lt;b&gt;x&lt;/b&gt;&#34;: want YYYY-MM`},
		{"zone", "Mars/Olympus", `time zone &#34;Mars/Olympus&#34;: want an IANA name`},
		{"due_days", "0", `due days &#34;0&#34;: want a whole number 1..366`},
		{"due_days", "x", `due days &#34;x&#34;: want a whole number 1..366`},
		{"due", "tomorrow", `due date &#34;tomorrow&#34;: want RFC 3339`},
		{"due", "2026-10-20T00:00:00Z", "is before the period ends"},
		{"floor_fen", "-5", `daily floor &#34;-5&#34;: want a whole number of fen 0..100000000`},
	} {
		form := neturl.Values{}
		for k, v := range good {
			form.Set(k, v)
		}
		form.Set(tc.field, tc.value)
		r := httptest.NewRequest(http.MethodPost, "/wages", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		w := httptest.NewRecorder()
		s.wagesPost(w, r)
		if w.Code != http.StatusBadRequest || !strings.Contains(w.Body.String(), tc.want) {
			t.Errorf("%s=%q: %d, want 400 naming %q\n%s", tc.field, tc.value, w.Code, tc.want, w.Body.String())
		}
		if strings.Contains(w.Body.String(), "<b>x</b>") {
			t.Errorf("%s=%q: the page shows the value unescaped", tc.field, tc.value)
		}
	}
	if n := s.wageRuns.Len(); n != 0 {
		t.Fatalf("%d reports started from bad forms", n)
	}
}
