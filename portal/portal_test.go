package portal

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
)

// TestPortal drives the portal in a real Chromium against a real ledger
// node and a real gateway: one browser, one ledger and one gateway for all
// of its subtests (they run in order: the audit's tampering comes last).
func TestPortal(t *testing.T) {
	e := newEnv(t)
	// Five batches: 2+2+2+2+1 records of two kinds. The gateway serves
	// the last record with markup and a line break in its kind.
	const hostileKind = "<script>window.__pwned=3</script>\n✓ forged<b>bold</b>"
	var gseqs []uint64
	for i := range 5 {
		if i < 4 {
			gseqs = append(gseqs, e.add(0, ""), e.add(1, ""))
		} else {
			gseqs = append(gseqs, e.addKind(0, "", hostileKind))
		}
		e.Cut()
	}
	b := newBrowser(t)
	s := e.startPortal(t, nil)
	base := s.URL()
	b.use(base)

	t.Run("verify", func(t *testing.T) {
		genuine := e.bundle(gseqs[0])
		dir := t.TempDir()
		write := func(name string, data []byte) string {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}
		upload := func(path string) []string {
			b.open(t, base+"/verify", "#verify-form")
			b.do(t, chromedp.SetUploadFiles(chromedp.CSS("#bundle"), []string{path}),
				chromedp.Click(chromedp.CSS("#verify")), chromedp.WaitVisible(chromedp.CSS("#verdict")))
			return eval[[]string](t, b, `Array.from(document.querySelectorAll('#steps li')).map(li => li.textContent)`)
		}

		steps := upload(write("genuine.json", genuine))
		if len(steps) != 10 {
			t.Fatalf("genuine bundle: %d steps, want the trust check and 9: %q", len(steps), steps)
		}
		for _, st := range steps {
			if !strings.HasPrefix(st, "✓") {
				t.Fatalf("genuine bundle: step %q is not ✓ (all: %q)", st, steps)
			}
		}
		if v := b.text(t, "#verdict"); !strings.HasPrefix(v, "OK: record") {
			t.Fatalf("genuine bundle: verdict %q", v)
		}
		b.screenshot(t, "verify")
		b.clean(t)

		// One changed byte in the envelope: ✗ at step 1.
		bd, err := evidence.ParseBundle(genuine)
		if err != nil {
			t.Fatal(err)
		}
		bd.Envelope[len(bd.Envelope)/2] ^= 1
		tampered, err := bd.Encode()
		if err != nil {
			t.Fatal(err)
		}
		steps = upload(write("tampered.json", tampered))
		if len(steps) != 2 || !strings.HasPrefix(steps[0], "✓") || !strings.HasPrefix(steps[1], "✗ 1. "+evidence.StepEnvelope) {
			t.Fatalf("tampered envelope: steps %q, want ✓ trust then ✗ at step 1", steps)
		}
		b.screenshot(t, "verify-tampered")
		b.clean(t)

		// A bundle of another chain (package anchor/evidence's golden one) is
		// refused at the trust step, before any numbered step.
		other, err := os.ReadFile("../anchor/evidence/testdata/bundle.json")
		if err != nil {
			t.Fatal(err)
		}
		steps = upload(write("other.json", other))
		if len(steps) != 1 || !strings.HasPrefix(steps[0], "✗ "+evidence.StepTrustFile) {
			t.Fatalf("bundle of another chain: steps %q, want ✗ at the trust file check", steps)
		}
		b.clean(t)

		// Markup and control characters in a bundle's string show as text.
		var m map[string]any
		if err := json.Unmarshal(genuine, &m); err != nil {
			t.Fatal(err)
		}
		const evil = "<script>window.__pwned=1</script>\n✓ OK: forged<img src=x onerror=window.__pwned=2>"
		m["record"].(map[string]any)["did"] = evil
		hostile, _ := json.Marshal(m)
		steps = upload(write("hostile.json", hostile))
		if len(steps) != 1 || !strings.HasPrefix(steps[0], "✗ bundle file") || !strings.Contains(steps[0], "<script>window.__pwned=1</script>") || !strings.Contains(steps[0], `\n✓ OK: forged`) {
			t.Fatalf("hostile bundle: steps %q, want its strings as text", steps)
		}
		if n := eval[int](t, b, `document.querySelectorAll('main script, main img').length`); n != 0 {
			t.Fatalf("hostile bundle: %d script or img elements in the page", n)
		}
		if pwned := eval[bool](t, b, `window.__pwned !== undefined`); pwned {
			t.Fatal("hostile bundle: its script ran")
		}

		// Pasted text verifies too.
		b.open(t, base+"/verify", "#verify-form")
		b.do(t, chromedp.SetValue(chromedp.CSS("#text"), string(genuine)), chromedp.Click(chromedp.CSS("#verify")), chromedp.WaitVisible(chromedp.CSS("#verdict")))
		if v := b.text(t, "#verdict"); !strings.HasPrefix(v, "OK: record") {
			t.Fatalf("pasted bundle: verdict %q", v)
		}
		b.clean(t)
	})

	t.Run("consortium", func(t *testing.T) {
		b.open(t, base+"/consortium", "#members")
		vals := eval[[]string](t, b, `Array.from(document.querySelectorAll('#validators tr')).slice(1).map(r => r.textContent)`)
		if len(vals) != 1 || !strings.Contains(vals[0], "up") {
			t.Fatalf("validators %q, want one, up", vals)
		}
		members := eval[[]string](t, b, `Array.from(document.querySelectorAll('#members tr')).slice(1).map(r => r.textContent)`)
		if len(members) != 2 || !strings.Contains(strings.Join(members, "|"), string(e.LGW.DID())) || !strings.Contains(strings.Join(members, "|"), "site-b") {
			t.Fatalf("members %q, want the two gateways", members)
		}
		if n := eval[int](t, b, `document.querySelectorAll('#blocks tr').length - 1`); n < 5 {
			t.Fatalf("%d recent blocks shown", n)
		}
		b.screenshot(t, "consortium")
		b.clean(t)
	})

	t.Run("gateway", func(t *testing.T) {
		b.open(t, base+"/consortium", "#members")
		if !eval[bool](t, b, `(a => a ? (a.click(), true) : false)(Array.from(document.querySelectorAll('#members a')).find(a => a.textContent === "`+string(e.LGW.DID())+`"))`) {
			t.Fatal("no link to the gateway on the Consortium page")
		}
		b.do(t, chromedp.WaitVisible(chromedp.CSS("#headers")))
		rows := func() []string {
			return eval[[]string](t, b, `Array.from(document.querySelectorAll('#headers tr')).slice(1).map(r => r.dataset.seq + " " + r.querySelector('.sig').textContent + r.querySelector('.prev').textContent)`)
		}
		// Page size 3: batches 5, 4, 3, then 2, 1.
		if got, want := strings.Join(rows(), ","), "5 ✓✓,4 ✓✓,3 ✓✓"; got != want {
			t.Fatalf("first page %q, want %q", got, want)
		}
		b.screenshot(t, "gateway")
		b.do(t, chromedp.Click(chromedp.CSS("#older")), chromedp.WaitVisible(chromedp.CSS("#newer")))
		if got, want := strings.Join(rows(), ","), "2 ✓✓,1 ✓✓"; got != want {
			t.Fatalf("second page %q, want %q", got, want)
		}
		b.do(t, chromedp.Click(chromedp.CSS(`#headers tr[data-seq="1"] a`)), chromedp.WaitVisible(chromedp.CSS("#records")))
		recs := eval[[]string](t, b, `Array.from(document.querySelectorAll('#records tr')).slice(1).map(r => r.cells[0].textContent + " " + r.cells[3].textContent)`)
		if got, want := strings.Join(recs, ","), fmt.Sprintf("%d env.dust,%d survey.point", gseqs[0], gseqs[1]); got != want {
			t.Fatalf("batch 1 records %q, want %q", got, want)
		}
		// The proof link gives the record's bundle.
		proof := get(t, b, chromedp.Evaluate[string](`fetch(document.querySelector('#records a').href).then(r => r.text())`, chromedp.EvalAwaitPromise))
		if pb, err := evidence.ParseBundle([]byte(proof)); err != nil || pb.Record.GSeq != gseqs[0] {
			t.Fatalf("proof link: %v, %.200s", err, proof)
		}
		b.screenshot(t, "batch")
		b.clean(t)

		// A gateway's strings show as text: markup escaped, the line
		// break as \n.
		b.open(t, fmt.Sprintf("%s/batch?did=%s&seq=5", base, e.LGW.DID()), "#records")
		kind := eval[string](t, b, `document.querySelector('#records tr:nth-child(2)').cells[3].textContent`)
		if want := `<script>window.__pwned=3</script>\n✓ forged<b>bold</b>`; kind != want {
			t.Fatalf("hostile kind shows as %q, want %q", kind, want)
		}
		if n := eval[int](t, b, `document.querySelectorAll('main script, main b').length`); n != 1 {
			t.Fatalf("hostile kind: %d script or b elements in main, want only the page's own <b>", n)
		}
		if pwned := eval[bool](t, b, `window.__pwned !== undefined`); pwned {
			t.Fatal("hostile kind: its script ran")
		}
		b.clean(t)
	})

	t.Run("charts", func(t *testing.T) {
		b.open(t, base+"/charts", "#chart-txs")
		if n := eval[int](t, b, `document.querySelectorAll('#chart-records rect').length`); n < 2 {
			t.Fatalf("records chart: %d bars, want the two kinds", n)
		}
		legend := b.text(t, ".legend")
		if !strings.Contains(legend, "env.dust") || !strings.Contains(legend, "survey.point") {
			t.Fatalf("records chart legend %q", legend)
		}
		if n := eval[int](t, b, `document.querySelectorAll('#chart-latency rect').length`); n != 5 {
			t.Fatalf("latency chart: %d bars, want one per batch (5)", n)
		}
		if n := eval[int](t, b, `document.querySelectorAll('#chart-txs rect').length`); n < 5 {
			t.Fatalf("transactions chart: %d bars, want a bar per block with txs", n)
		}
		if n := eval[int](t, b, `document.querySelectorAll('#chart-refusals, #chart-blocktime').length`); n != 2 {
			t.Fatalf("%d of the refusals and block-interval charts", n)
		}
		b.screenshot(t, "charts")
		b.clean(t)
	})

	t.Run("audit", func(t *testing.T) {
		run := func() string {
			b.open(t, base+"/audit", "#audit-form")
			b.do(t, chromedp.Click(chromedp.CSS("#run")), chromedp.WaitVisible(chromedp.CSS("#audit-result")))
			return b.text(t, "#audit-verdict")
		}
		if v := run(); !strings.Contains(v, "No findings") {
			t.Fatalf("clean history: %q", v)
		}
		if bar := eval[string](t, b, `document.getElementById('bar').value + "/" + document.getElementById('bar').max`); bar != "5/5" {
			t.Fatalf("progress bar at the end: %s", bar)
		}
		b.clean(t)

		// Delete the first record of batch 2 from the gateway's store.
		e.deleteRecord(gseqs[2])
		if v := run(); !strings.Contains(v, "finding") {
			t.Fatalf("deleted record: verdict %q", v)
		}
		rows := eval[[]string](t, b, `Array.from(document.querySelectorAll('#findings tr')).slice(1).map(r => r.cells[0].textContent + ": " + r.cells[1].textContent)`)
		found := false
		for _, r := range rows {
			found = found || strings.HasPrefix(r, "missing_records: batch 2:")
		}
		if !found {
			t.Fatalf("deleted record: findings %q, want missing_records of batch 2", rows)
		}
		b.screenshot(t, "audit")
		fetch := func(sel string) string {
			return get(t, b, chromedp.Evaluate[string](`fetch(document.querySelector('`+sel+`').href).then(r => r.text())`, chromedp.EvalAwaitPromise))
		}
		var rep auditReport
		if err := json.Unmarshal([]byte(fetch("#json")), &rep); err != nil {
			t.Fatal(err)
		}
		if rep.Gateway != e.LGW.DID() || len(rep.Findings) != len(rows) || rep.Findings[0].Kind != "missing_records" {
			t.Fatalf("JSON report %+v, findings on the page %q", rep, rows)
		}
		csv := fetch("#csv")
		if !strings.HasPrefix(csv, "gateway,kind,detail\n") || !strings.Contains(csv, string(e.LGW.DID())+",missing_records,batch 2:") {
			t.Fatalf("CSV report %q", csv)
		}
		b.clean(t)
	})

	t.Run("accounts", func(t *testing.T) { testAccounts(t, e, b) })

	t.Run("paging", func(t *testing.T) { testPagingCost(t, e) })
}
