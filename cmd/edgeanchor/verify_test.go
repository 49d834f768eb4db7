package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeanchor/edgeanchor/anchor"
)

// runCLI runs the edgeanchor command in process and returns its output and
// exit code.
func runCLI(t *testing.T, args ...string) (string, int) {
	t.Helper()
	root := newRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return out.String(), 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return out.String() + err.Error(), ee.code
	}
	return out.String() + err.Error(), 1
}

func TestVerifyCommand(t *testing.T) {
	bundle := filepath.Join("..", "..", "anchor", "testdata", "bundle.json")
	trust := filepath.Join("..", "..", "anchor", "testdata", "trust.json")
	out, code := runCLI(t, "verify", bundle, "--trust", trust)
	if code != 0 {
		t.Fatalf("verify of a good bundle: exit %d\n%s", code, out)
	}
	for i, step := range anchor.Steps {
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
	b, err := anchor.ParseBundle(raw)
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
	if !strings.Contains(out, "✗ 5. "+anchor.StepMerklePath) || strings.Contains(out, anchor.StepHeaderSig) {
		t.Fatalf("tampered bundle output:\n%s", out)
	}

	// One changed hash of the receipt's path in its commit group, then the
	// commit group statement of another record: exit 1 at the receipt step.
	for name, tamper := range map[string]func(b *anchor.Bundle){
		"receipt path": func(b *anchor.Bundle) { b.Receipt.Path[0][0] ^= 1 },
		"receipt group": func(b *anchor.Bundle) {
			other, err := anchor.ReadBundleFile(filepath.Join("..", "..", "anchor", "testdata", "bundle-other-device.json"))
			if err != nil {
				t.Fatal(err)
			}
			b.Receipt.Group, b.Receipt.Sig = other.Receipt.Group, other.Receipt.Sig
		},
	} {
		b, err := anchor.ParseBundle(raw)
		if err != nil {
			t.Fatal(err)
		}
		tamper(b)
		bad, _ := b.Encode()
		if err := os.WriteFile(badPath, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		out, code = runCLI(t, "verify", badPath, "--trust", trust)
		if code != 1 || !strings.Contains(out, "✗ 3. "+anchor.StepReceipt) || strings.Contains(out, anchor.StepLeaf) {
			t.Fatalf("%s tampered: exit %d\n%s", name, code, out)
		}
	}

	// A bundle from before group signing (receipt signed per record).
	old := filepath.Join("..", "..", "anchor", "testdata", "bundle-per-record.json")
	oldTrust := filepath.Join("..", "..", "anchor", "testdata", "trust-per-record.json")
	if out, code := runCLI(t, "verify", old, "--trust", oldTrust); code != 0 || !strings.Contains(out, "per-record form") {
		t.Fatalf("per-record bundle: exit %d\n%s", code, out)
	}
	if out, code := runCLI(t, "verify", bundle, "--trust", trust); !strings.Contains(out, "signed once") || code != 0 {
		t.Fatalf("group bundle detail: exit %d\n%s", code, out)
	}

	for name, args := range map[string][]string{
		"no trust":        {"verify", bundle},
		"missing bundle":  {"verify", filepath.Join(t.TempDir(), "nope.json"), "--trust", trust},
		"bundle as trust": {"verify", bundle, "--trust", bundle},
	} {
		if out, code := runCLI(t, args...); code == 0 {
			t.Errorf("%s: exit 0\n%s", name, out)
		}
	}
}
