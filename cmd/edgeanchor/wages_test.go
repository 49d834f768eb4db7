package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
	"github.com/edgeanchor/edgeanchor/wages"
	"github.com/edgeanchor/edgeanchor/wages/wagestest"
)

// TestWagesCommand runs `edgeanchor wages` against a real gateway and
// ledger: usage errors exit 2 naming the flag; a due date after the newest
// anchor exits 1 (the log cannot be complete through it yet) naming what
// is missing; once a batch is anchored after the due date the report is
// complete and exits 0, in each format.
func TestWagesCommand(t *testing.T) {
	e := newAuditEnv(t)
	e.addBurst(3)
	e.Cut()
	dir := t.TempDir()
	trust, err := e.Client.ExportTrust(t.Context(), 0)
	if err != nil {
		t.Fatal(err)
	}
	trustPath := filepath.Join(dir, "trust.json")
	if err := evidence.WriteTrustFile(trustPath, trust); err != nil {
		t.Fatal(err)
	}
	// Last month: due dates come after the period's end.
	period := time.Now().UTC().AddDate(0, 0, -time.Now().UTC().Day()).Format("2006-01")
	base := []string{"wages", "--gateway", string(e.LGW.DID()), "--api", "http://" + e.G.HTTPAddr(), "--trust", trustPath, "--period", period, "--zone", "UTC"}

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"wages", "--gateway", string(e.LGW.DID())}, "--api, --trust, --period required"},
		{append(append([]string{}, base...), "--format", "xml"), `--format "xml"`},
		{append(append([]string{}, base...), "--zone", "Mars/Olympus"), "--zone"},
		{append(append([]string{}, base[:len(base)-4]...), "--period", "2026-13"), `period "2026-13"`},
		{append(append([]string{}, base...), "--salt-file", "x"), "--salt-file and --ids go together"},
	} {
		out, code := runCLI(t, c.args...)
		if code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, want 2 naming %q:\n%s", c.args[1:], code, c.want, out)
		}
	}

	due := time.Now().UTC().Add(time.Second)
	// Wait until the due date has passed, then anchor a batch after it.
	out, code := runCLI(t, append(append([]string{}, base...), "--due", due.Format(time.RFC3339Nano))...)
	if code != 1 || !strings.Contains(out, "no batch anchored after the due date") {
		t.Fatalf("due date ahead of the log: exit %d\n%s", code, out)
	}
	testutil.WaitUntil(t, 5*time.Second, "the due date to pass", func() bool { return time.Now().After(due) })
	e.addBurst(1)
	e.Cut()
	args := append(append([]string{}, base...), "--due", due.Format(time.RFC3339Nano))
	out, code = runCLI(t, args...)
	if code != 0 || !strings.Contains(out, "complete through the due date") {
		t.Fatalf("complete log: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, append(args, "--format", "json")...)
	var rep wages.Report
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || !rep.Complete || rep.Checked.Records != 8 || rep.Checked.PayrollRecords != 0 {
		t.Fatalf("json: exit %d %+v\n%s", code, rep.Checked, out)
	}
	out, code = runCLI(t, append(args, "--format", "csv")...)
	if code != 0 || strings.TrimSpace(out) != strings.Join(wages.CSVHeader, ",") {
		t.Fatalf("csv of a site without payroll records: exit %d\n%s", code, out)
	}
	// A salt that is not hex is a usage error; the ID list is read locally.
	salt, ids := filepath.Join(dir, "salt"), filepath.Join(dir, "ids.csv")
	if err := os.WriteFile(salt, []byte("not hex\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ids, []byte("110105199001011234,Zhang San\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, append(args, "--salt-file", salt, "--ids", ids)...)
	if code != 2 || !strings.Contains(out, "want the salt in hex") {
		t.Fatalf("bad salt: exit %d\n%s", code, out)
	}

	// A pack for a reference without records is refused; verify-pack
	// names the step a non-pack fails.
	packOut := filepath.Join(dir, "pack.json")
	out, code = runCLI(t, append(args, "--pack-worker", strings.Repeat("ab", 32), "--pack-out", packOut)...)
	if code != 1 || !strings.Contains(out, "no record of worker") {
		t.Fatalf("pack of an unknown worker: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, append(args, "--pack-worker", strings.Repeat("ab", 32))...)
	if code != 2 || !strings.Contains(out, "--pack-worker and --pack-out go together") {
		t.Fatalf("--pack-worker alone: exit %d\n%s", code, out)
	}
	if err := os.WriteFile(packOut, []byte(`{"type":"ProofBundle"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, "verify-pack", packOut, "--trust", trustPath)
	if code != 1 || !strings.Contains(out, "✗ 1. "+wages.PackStepFormat) {
		t.Fatalf("verify-pack of a bundle: exit %d\n%s", code, out)
	}
	out, code = runCLI(t, "verify-pack", packOut)
	if code != 2 || !strings.Contains(out, "--trust is required") {
		t.Fatalf("verify-pack without --trust: exit %d\n%s", code, out)
	}
}

// TestWagesPackCommand: on a seeded month, `wages` finds the unpaid
// worker, `wages --pack-worker` writes the worker's pack, `verify-pack`
// proves the conclusion offline, and refuses the pack with a record's byte
// altered, naming the step.
func TestWagesPackCommand(t *testing.T) {
	s, due := wagestest.SeededMonth(t, 1)
	dir := t.TempDir()
	trustPath := filepath.Join(dir, "trust.json")
	if err := evidence.WriteTrustFile(trustPath, s.Trust); err != nil {
		t.Fatal(err)
	}
	args := []string{"wages", "--gateway", string(s.LGW.DID()), "--api", s.API(), "--trust", trustPath, "--period", wagestest.Period,
		"--zone", "+08:00", "--due", due.Format(time.RFC3339Nano), "--floor-fen", fmt.Sprint(wagestest.FloorFen)}
	out, code := runCLI(t, append(args, "--format", "json")...)
	var rep wages.Report
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil {
		t.Fatalf("wages: exit %d\n%.2000s", code, out)
	}
	var unpaid *wages.Worker
	for i, w := range rep.Workers {
		if w.Status == wages.StatusUnpaid {
			unpaid = &rep.Workers[i]
		}
	}
	if unpaid == nil || rep.Counts[wages.StatusUnpaid] != 2 {
		t.Fatalf("counts %v", rep.Counts)
	}
	pack := filepath.Join(dir, "pack.json")
	if out, code = runCLI(t, append(args, "--pack-worker", unpaid.Ref, "--pack-out", pack)...); code != 0 {
		t.Fatalf("pack: exit %d\n%s", code, out)
	}
	if st, err := os.Stat(pack); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("pack file: %v %v", st, err)
	}
	out, code = runCLI(t, "verify-pack", pack, "--trust", trustPath)
	want := fmt.Sprintf("proven: worker %s attended %d day(s) in %s; no wage record for %s was anchored by %s",
		unpaid.Ref, unpaid.Days, wagestest.Period, wagestest.Period, anchor.FormatTime(due))
	if code != 0 || !strings.Contains(out, want) {
		t.Fatalf("verify-pack: exit %d\n%s\nwant %s", code, out, want)
	}
	for i, step := range wages.PackSteps {
		if !strings.Contains(out, fmt.Sprintf("✓ %d. %s", i+1, step)) {
			t.Errorf("verify-pack does not print step %d %q:\n%s", i+1, step, out)
		}
	}
	data, err := os.ReadFile(pack)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(data, []byte(`"receipt":"`)) + 30
	data[i] ^= 1
	if data[i] == '"' || data[i] == '\\' {
		data[i] ^= 3
	}
	if err := os.WriteFile(pack, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, "verify-pack", pack, "--trust", trustPath)
	if code != 1 || !strings.Contains(out, "✗ 5. "+wages.PackStepRecords) {
		t.Fatalf("altered pack: exit %d\n%s", code, out)
	}
}
