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

	"github.com/cometbft/cometbft/crypto/ed25519"
	"github.com/cometbft/cometbft/types"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
)

// runCLI runs the edgeanchor command in process, as main does, and returns
// its output (stdout and stderr) and exit code.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	var out bytes.Buffer
	code := run(args, &out, &out)
	return out.String(), code
}

func TestVerifyCommand(t *testing.T) {
	bundle := filepath.Join("..", "..", "anchor", "evidence", "testdata", "bundle.json")
	trust := filepath.Join("..", "..", "anchor", "evidence", "testdata", "trust.json")
	out, code := runCLI(t, "verify", bundle, "--trust", trust)
	if code != 0 {
		t.Fatalf("verify of a good bundle: exit %d\n%s", code, out)
	}
	for i, step := range evidence.Steps {
		if !strings.Contains(out, "✓ "+string(rune('1'+i))+". "+step) {
			t.Errorf("output lacks ✓ for step %d %q:\n%s", i+1, step, out)
		}
	}
	if strings.Contains(out, "✗") {
		t.Errorf("good bundle printed ✗:\n%s", out)
	}

	// One changed Merkle sibling: exit 1 at the Merkle step, nothing after.
	raw, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	b, err := evidence.ParseBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	b.Merkle.Path[0][0] ^= 1
	bad, _ := b.Encode()
	badPath := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(badPath, bad, 0o644); err != nil {
		t.Fatal(err)
	}
	out, code = runCLI(t, "verify", badPath, "--trust", trust)
	if code != 1 {
		t.Fatalf("tampered bundle: exit %d, want 1\n%s", code, out)
	}
	if !strings.Contains(out, "✗ 5. "+evidence.StepMerklePath) || strings.Contains(out, evidence.StepHeaderSig) {
		t.Fatalf("tampered bundle output:\n%s", out)
	}

	// One changed hash of the receipt's path in its commit group, then the
	// commit group statement of another record: exit 1 at the receipt step.
	for name, tamper := range map[string]func(b *evidence.Bundle){
		"receipt path": func(b *evidence.Bundle) { b.Receipt.Path[0][0] ^= 1 },
		"receipt group": func(b *evidence.Bundle) {
			other, err := evidence.ReadBundleFile(filepath.Join("..", "..", "anchor", "evidence", "testdata", "bundle-other-device.json"))
			if err != nil {
				t.Fatal(err)
			}
			b.Receipt.Group, b.Receipt.Sig = other.Receipt.Group, other.Receipt.Sig
		},
	} {
		b, err := evidence.ParseBundle(raw)
		if err != nil {
			t.Fatal(err)
		}
		tamper(b)
		bad, _ := b.Encode()
		if err := os.WriteFile(badPath, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		out, code = runCLI(t, "verify", badPath, "--trust", trust)
		if code != 1 || !strings.Contains(out, "✗ 3. "+evidence.StepReceipt) || strings.Contains(out, evidence.StepLeaf) {
			t.Fatalf("%s tampered: exit %d\n%s", name, code, out)
		}
	}

	// A bundle from before group signing (receipt signed per record).
	old := filepath.Join("..", "..", "anchor", "evidence", "testdata", "bundle-per-record.json")
	oldTrust := filepath.Join("..", "..", "anchor", "evidence", "testdata", "trust-per-record.json")
	if out, code := runCLI(t, "verify", old, "--trust", oldTrust); code != 0 || !strings.Contains(out, "per-record form") {
		t.Fatalf("per-record bundle: exit %d\n%s", code, out)
	}
	if out, code := runCLI(t, "verify", bundle, "--trust", trust); !strings.Contains(out, "signed once") || code != 0 {
		t.Fatalf("group bundle detail: exit %d\n%s", code, out)
	}

	for name, tc := range map[string]struct {
		args []string
		code int
	}{
		"no trust":        {[]string{"verify", bundle}, 2},
		"unknown flag":    {[]string{"verify", bundle, "--trust", trust, "--bogus"}, 2},
		"missing bundle":  {[]string{"verify", filepath.Join(t.TempDir(), "nope.json"), "--trust", trust}, 2},
		"missing trust":   {[]string{"verify", bundle, "--trust", filepath.Join(t.TempDir(), "nope.json")}, 2},
		"bundle as trust": {[]string{"verify", bundle, "--trust", bundle}, 1},
	} {
		if out, code := runCLI(t, tc.args...); code != tc.code {
			t.Errorf("%s: exit %d, want %d\n%s", name, code, tc.code, out)
		}
	}
}

// goldenPaths are the golden bundle and trust file of anchor/evidence/testdata.
func goldenPaths() (bundle, trust string) {
	return filepath.Join("..", "..", "anchor", "evidence", "testdata", "bundle.json"), filepath.Join("..", "..", "anchor", "evidence", "testdata", "trust.json")
}

// writeTemp writes data to a new file in a test directory.
func writeTemp(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// forgedLine is a made-up verification line an attacker would like verify
// to print.
const forgedLine = "✓ 9. anchor tx accepted by the ledger (result code 0): forged"

// noForgedLines fails if out has a line that verify did not write: a line
// that is the forged sentence or an OK.
func noForgedLines(t *testing.T, out string) {
	t.Helper()
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, forgedLine) || strings.HasPrefix(l, "OK") {
			t.Fatalf("output has a line verify must not print: %q\n%s", l, out)
		}
	}
}

// TestVerifyRecordMembers: every member of "record" is checked against the
// signed documents; a changed, deleted or injected value is refused (exit 1)
// and nothing from it prints as a line of its own.
func TestVerifyRecordMembers(t *testing.T) {
	bundle, trust := goldenPaths()
	raw, err := os.ReadFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	b, err := evidence.ParseBundle(raw)
	if err != nil {
		t.Fatal(err)
	}
	gw, did := string(b.Record.Gateway), string(b.Record.DID)
	for name, edit := range map[string]func(m map[string]any){
		"gateway changed":         func(m map[string]any) { m["gateway"] = did },
		"gateway deleted":         func(m map[string]any) { delete(m, "gateway") },
		"gateway with a new line": func(m map[string]any) { m["gateway"] = gw + "\n" + forgedLine },
		"did changed":             func(m map[string]any) { m["did"] = gw },
		"did with a new line":     func(m map[string]any) { m["did"] = did + "\n" + forgedLine },
		"gseq changed":            func(m map[string]any) { m["gseq"] = m["gseq"].(float64) + 1 },
		"seq changed":             func(m map[string]any) { m["seq"] = m["seq"].(float64) + 1 },
	} {
		t.Run(name, func(t *testing.T) {
			var whole map[string]json.RawMessage
			if err := json.Unmarshal(raw, &whole); err != nil {
				t.Fatal(err)
			}
			var rec map[string]any
			if err := json.Unmarshal(whole["record"], &rec); err != nil {
				t.Fatal(err)
			}
			edit(rec)
			whole["record"], _ = json.Marshal(rec)
			data, _ := json.Marshal(whole)
			out, code := runCLI(t, "verify", writeTemp(t, "b.json", data), "--trust", trust)
			if code != 1 {
				t.Fatalf("exit %d, want 1\n%s", code, out)
			}
			noForgedLines(t, out)
		})
	}
}

// TestVerifyEscapesTrustFile: a trust file's text (here its chain id, with
// a line break and a made-up line) is printed escaped, never as a line.
func TestVerifyEscapesTrustFile(t *testing.T) {
	bundle, trust := goldenPaths()
	raw, err := os.ReadFile(trust)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	m["chain_id"] = m["chain_id"].(string) + "\n" + forgedLine
	data, _ := json.Marshal(m)
	out, code := runCLI(t, "verify", bundle, "--trust", writeTemp(t, "trust.json", data))
	if code != 1 || !strings.Contains(out, "✗ trust file:") {
		t.Fatalf("exit %d, want 1 with a trust file failure\n%s", code, out)
	}
	noForgedLines(t, out)
}

// TestVerifyTrustProblemIsTheTrustFiles: a trust file holding the chain's
// validator and an invented one of equal power fails as a trust-file
// problem, before any numbered step, naming the invented validator.
func TestVerifyTrustProblemIsTheTrustFiles(t *testing.T) {
	bundle, trustPath := goldenPaths()
	trust, err := evidence.ReadTrustFile(trustPath)
	if err != nil {
		t.Fatal(err)
	}
	inv := types.NewValidator(ed25519.GenPrivKey().PubKey(), trust.Validators.Validators[0].VotingPower)
	trust.Validators = types.NewValidatorSet(append(trust.Validators.Copy().Validators, inv))
	data, err := json.Marshal(trust)
	if err != nil {
		t.Fatal(err)
	}
	out, code := runCLI(t, "verify", bundle, "--trust", writeTemp(t, "trust.json", data))
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	if !strings.Contains(out, "✗ trust file:") || !strings.Contains(out, fmt.Sprintf("validator %X (power %d) is in the trust file but not in the chain's set", inv.Address, inv.VotingPower)) {
		t.Fatalf("the trust file's problem is not named:\n%s", out)
	}
	if strings.Contains(out, "✓ 1.") || strings.Contains(out, "✗ 2.") || strings.Contains(out, "✓ 8.") {
		t.Fatalf("a numbered step ran on a bad trust file:\n%s", out)
	}
}

// TestVerifyWording: times are RFC 3339 (no monotonic clock reading), the
// validator count agrees with its noun, the block time is not called the
// anchoring time, and the help names commands that exist.
func TestVerifyWording(t *testing.T) {
	bundle, trust := goldenPaths()
	out, code := runCLI(t, "verify", bundle, "--trust", trust)
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	for _, bad := range []string{"1 validators", "m=+", "block time"} {
		if strings.Contains(out, bad) {
			t.Errorf("output has %q:\n%s", bad, out)
		}
	}
	if !strings.Contains(out, "1 validator ") || !strings.Contains(out, "anchored no later than 2026-11-25T19:29:39.216387404Z (the time of block 5") {
		t.Errorf("output lacks the validator count or the anchoring bound:\n%s", out)
	}
	help, code := runCLI(t, "verify", "--help")
	if code != 0 || strings.Contains(help, "ledger trust export") || !strings.Contains(help, "ledger export-trust") {
		t.Errorf("verify --help (exit %d) names a command that does not exist:\n%s", code, help)
	}
	// An expired trusting period is reported with RFC 3339 times.
	tr, err := evidence.ReadTrustFile(trust)
	if err != nil {
		t.Fatal(err)
	}
	tr.TrustingPeriod = time.Hour
	data, _ := json.Marshal(tr)
	out, code = runCLI(t, "verify", bundle, "--trust", writeTemp(t, "trust.json", data))
	if code != 1 || !strings.Contains(out, "✗ trust file:") || !strings.Contains(out, "ended at 2026-11-25T20:29:3") ||
		strings.Contains(out, "m=+") || strings.Contains(out, " +0000 UTC") || strings.Contains(out, "✗ 2.") {
		t.Fatalf("expired trust: exit %d\n%s", code, out)
	}
}
