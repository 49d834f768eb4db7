package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// The retention walk-through of docs/operations.md on a real ledger and
// gateway: two anchored batches before the cutoff and two after; `gateway
// archive` moves the first two into a file, `archive proof` makes a bundle
// of an archived record that `verify` accepts, the restarted gateway
// answers 410 naming the archive, and the audit has no finding and names
// the archive.
func TestArchiveCommands(t *testing.T) {
	e := newAuditEnv(t)
	for range 3 {
		e.add(0, 0)
		e.add(1, 0)
	}
	e.Cut()
	e.addBurst(2)
	b2 := e.Cut()
	cutoff := time.Now().UTC()
	testutil.WaitUntil(t, 5*time.Second, "clock past the cutoff", func() bool { return time.Since(cutoff) > 5*time.Millisecond })
	e.add(0, 0)
	e.Cut()
	e.add(1, 0)
	last := e.Cut()
	e.StopGateway()

	dir := t.TempDir()
	trust, err := evidence.ExportTrustFromHome(e.Node.Home)
	if err != nil {
		t.Fatal(err)
	}
	trustPath := filepath.Join(dir, "trust.json")
	if err := evidence.WriteTrustFile(trustPath, trust); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "site-a-old.ea")
	args := []string{"gateway", "archive", "--data-dir", e.Config.DataDir, "--ledger", e.Node.RPC, "--trust", trustPath, "--out", out}

	// Usage errors exit 2 and write nothing.
	if _, errOut, code := devRun(t, dir, nil, append(args, "--before", "last tuesday")...); code != 2 || !strings.Contains(errOut, "--before") {
		t.Fatalf("bad --before: exit %d %s", code, errOut)
	}
	// Nothing ends before a cutoff in the past: exit 1, nothing written.
	if _, errOut, code := devRun(t, dir, nil, append(args, "--before", "2020-01-01")...); code != 1 || !strings.Contains(errOut, "nothing to archive") {
		t.Fatalf("archive before 2020: exit %d %s", code, errOut)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("an archive was written with nothing to archive")
	}
	stdout := devMustRun(t, dir, nil, append(args, "--before", cutoff.Format(time.RFC3339Nano))...)
	want := fmt.Sprintf("archived gseq 1..%d", b2.Last)
	if !strings.Contains(stdout, want) || !strings.Contains(stdout, "batches 1..2") {
		t.Fatalf("archive: %s\nwant %q", stdout, want)
	}
	// The same --out again is refused (an archive is never overwritten).
	if _, _, code := devRun(t, dir, nil, append(args, "--before", cutoff.Format(time.RFC3339Nano))...); code != 2 {
		t.Fatalf("archive over an existing file: exit %d, want 2", code)
	}

	// An archived record's bundle, from the file alone, verifies.
	devMustRun(t, dir, nil, "archive", "proof", "--archive", out, "--gseq", "1", "--out", "rec1.json")
	if got := devMustRun(t, dir, nil, "verify", "rec1.json", "--trust", trustPath); !strings.Contains(got, "OK: record") {
		t.Fatalf("verify of an archived record's bundle: %s", got)
	}
	devMustRun(t, dir, nil, "archive", "proof", "--archive", out, "--did", string(e.Devices[1].DID()), "--seq", "2", "--out", "rec-dev.json")
	devMustRun(t, dir, nil, "verify", "rec-dev.json", "--trust", trustPath)
	if _, errOut, code := devRun(t, dir, nil, "archive", "proof", "--archive", out, "--gseq", fmt.Sprint(last.Last)); code != 1 || !strings.Contains(errOut, "not in archive") {
		t.Fatalf("proof of a record not archived: exit %d %s", code, errOut)
	}
	if got := devMustRun(t, dir, nil, "archive", "verify", "--archive", out, "--trust", trustPath); !strings.Contains(got, fmt.Sprintf("%d records", b2.Last)) {
		t.Fatalf("archive verify: %s", got)
	}

	// The gateway, restarted on the store, names the archive.
	e.StartGateway()
	t.Cleanup(e.StopGateway)
	if err := testutil.WaitHTTP(10*time.Second, "http://"+e.G.HTTPAddr()+"/v1/records?from_gseq=1&to_gseq=1"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + e.G.HTTPAddr() + "/v1/records/1/proof")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusGone {
		t.Fatalf("proof of an archived record: %s, want 410", resp.Status)
	}
	report, code, findings := e.audit()
	if code != 0 || len(findings) != 0 || !strings.Contains(report, "in archive site-a-old.ea") {
		t.Fatalf("audit after archiving: exit %d, findings %v\n%s", code, findings, report)
	}
}
