package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeanchor/edgeanchor/gateway"
)

// token create prints one token per line, stores only hashes (0600), takes
// data_dir and the default site from --config, and refuses bad input with
// exit code 1 (2 for usage) without storing anything.
func TestTokenCLI(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	out := devMustRun(t, dir, nil, "token", "create", "--data-dir", data, "--site", "site-x", "--kind", "survey", "--count", "3", "--ttl", "2h")
	toks := strings.Fields(out)
	if len(toks) != 3 {
		t.Fatalf("printed %q, want 3 tokens", out)
	}
	raw, err := os.ReadFile(filepath.Join(data, gateway.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		if len(tok) != 64 || strings.Contains(string(raw), tok) {
			t.Fatalf("token %q: want 64 hex digits, never stored in clear", tok)
		}
	}
	if fi, _ := os.Stat(filepath.Join(data, gateway.TokenFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v", fi.Mode().Perm())
	}

	cfg := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+data+"\nsite: site-y\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	devMustRun(t, dir, nil, "token", "create", "--config", cfg, "--kind", "env")

	for _, bad := range [][]string{
		{"token", "create", "--data-dir", data, "--site", "site-x", "--kind", "robot"},
		{"token", "create", "--data-dir", data, "--site", "site-x", "--kind", "env", "--count", "0"},
		{"token", "create", "--data-dir", data, "--site", "site-x", "--kind", "env", "--ttl", "1s"},
		{"token", "create", "--data-dir", data, "--site", "Site X", "--kind", "env"},
	} {
		_, errOut, code := devRun(t, dir, nil, bad...)
		if code != 1 || !strings.Contains(errOut, "bad token request") {
			t.Fatalf("%v: exit %d, stderr %q; want 1 and the field named", bad, code, errOut)
		}
	}
	if _, _, code := devRun(t, dir, nil, "token", "create", "--kind", "env"); code != 2 {
		t.Fatalf("no --data-dir or --config: exit %d, want 2", code)
	}

	var list struct{ Tokens []gateway.TokenRecord }
	if err := json.Unmarshal([]byte(devMustRun(t, dir, nil, "token", "list", "--data-dir", data)), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Tokens) != 4 {
		t.Fatalf("listed %d tokens, want 4 (refused requests store nothing)", len(list.Tokens))
	}
	if last := list.Tokens[3]; last.Site != "site-y" || last.Kind != "env" {
		t.Fatalf("token made with --config: %+v, want the config's site", last)
	}
}
