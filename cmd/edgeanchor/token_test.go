package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/gateway/identity"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
)

// token create prints one token per line, stores only hashes (0600), takes
// data_dir and the default site from --config, and refuses bad input with
// exit code 1 (2 for usage) without storing anything.
func TestTokenCLI(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := filepath.Join(dir, "gateway.yaml")
	if err := os.WriteFile(cfg, []byte("data_dir: "+data+"\nsite: site-x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := devMustRun(t, dir, nil, "token", "create", "--config", cfg, "--kind", "survey", "--count", "3", "--ttl", "2h")
	toks := strings.Fields(out)
	if len(toks) != 3 {
		t.Fatalf("printed %q, want 3 tokens", out)
	}
	raw, err := os.ReadFile(filepath.Join(data, identity.TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range toks {
		if len(tok) != 64 || strings.Contains(string(raw), tok) {
			t.Fatalf("token %q: want 64 hex digits, never stored in clear", tok)
		}
	}
	if fi, _ := os.Stat(filepath.Join(data, identity.TokenFile)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("token file mode %v", fi.Mode().Perm())
	}

	// A data directory that holds tokens is a gateway's: --data-dir works.
	devMustRun(t, dir, nil, "token", "create", "--data-dir", data, "--site", "site-x", "--kind", "env")

	for _, bad := range [][]string{
		{"token", "create", "--data-dir", data, "--site", "site-x", "--kind", "robot"},
		{"token", "create", "--data-dir", data, "--site", "site-x", "--kind", "env", "--count", "0"},
		{"token", "create", "--data-dir", data, "--site", "site-x", "--kind", "env", "--ttl", "1s"},
		{"token", "create", "--data-dir", data, "--site", "Site X", "--kind", "env"},
	} {
		_, errOut, code := devRun(t, dir, nil, bad...)
		if code != 2 || !strings.Contains(errOut, "bad token request") {
			t.Fatalf("%v: exit %d, stderr %q; want 2 (usage) and the field named", bad, code, errOut)
		}
	}
	if _, _, code := devRun(t, dir, nil, "token", "create", "--kind", "env"); code != 2 {
		t.Fatalf("no --data-dir or --config: exit %d, want 2", code)
	}

	var list struct{ Tokens []identity.TokenRecord }
	if err := json.Unmarshal([]byte(devMustRun(t, dir, nil, "token", "list", "--data-dir", data)), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Tokens) != 4 {
		t.Fatalf("listed %d tokens, want 4 (refused requests store nothing)", len(list.Tokens))
	}
	if first := list.Tokens[0]; first.Site != "site-x" || first.Kind != "survey" {
		t.Fatalf("token made with --config: %+v, want the config's site", first)
	}
}

// A --data-dir that holds no gateway (a typo) is refused by create and list,
// naming what is missing, and nothing is made there; without --site the site
// is the gateway's (gateway.json), and a --site it does not serve is warned of.
func TestTokenDataDirMustHoldGateway(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "var", "gatewya")
	for _, args := range [][]string{
		{"token", "create", "--data-dir", typo, "--site", "site-a", "--kind", "env"},
		{"token", "list", "--data-dir", typo},
	} {
		out, errOut, code := devRun(t, dir, nil, args...)
		if code != 2 || !strings.Contains(errOut, typo+" does not exist") || out != "" {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want 2 and the missing directory named", args, code, out, errOut)
		}
	}
	if _, err := os.Stat(typo); !os.IsNotExist(err) {
		t.Fatalf("the mistyped directory was created: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	if err := os.Mkdir(empty, 0o700); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := devRun(t, dir, nil, "token", "list", "--data-dir", empty)
	if code != 2 || !strings.Contains(errOut, "holds no gateway.json, records/ or tokens.json") {
		t.Fatalf("empty dir: exit %d, stderr %q", code, errOut)
	}
	if ents, _ := os.ReadDir(empty); len(ents) != 0 {
		t.Fatalf("token list wrote into an empty directory: %v", ents)
	}

	// The gateway writes gateway.json at start (TestDataDirInfo in gateway/);
	// here it is written as a gateway writes it.
	gw := filepath.Join(dir, "gw")
	if err := os.Mkdir(gw, 0o700); err != nil {
		t.Fatal(err)
	}
	info := `{"v":1,"gateway":"did:ea:00000000000000000000000000000000","site":"site-q"}`
	if err := os.WriteFile(filepath.Join(gw, gateway.DataDirInfoFile), []byte(info), 0o600); err != nil {
		t.Fatal(err)
	}
	devMustRun(t, dir, nil, "token", "create", "--data-dir", gw, "--kind", "env")
	_, errOut, code = devRun(t, dir, nil, "token", "create", "--data-dir", gw, "--kind", "env", "--site", "site-r")
	if code != 0 || !strings.Contains(errOut, `warning: the gateway of `+gw+` serves site "site-q"`) {
		t.Fatalf("--site of another site: exit %d, stderr %q; want a warning naming the gateway's site", code, errOut)
	}
	var list struct{ Tokens []identity.TokenRecord }
	if err := json.Unmarshal([]byte(devMustRun(t, dir, nil, "token", "list", "--data-dir", gw)), &list); err != nil {
		t.Fatal(err)
	}
	if len(list.Tokens) != 2 || list.Tokens[0].Site != "site-q" || list.Tokens[1].Site != "site-r" {
		t.Fatalf("tokens %+v, want one for the gateway's site-q, then the asked site-r", list.Tokens)
	}

	// A data directory with tokens but no gateway.json (the gateway never
	// started) and no --config: --site is required, and said so.
	gw2 := filepath.Join(dir, "gw2")
	cfg2 := filepath.Join(dir, "gw2.yaml")
	if err := os.WriteFile(cfg2, []byte("data_dir: "+gw2+"\nsite: site-s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	devMustRun(t, dir, nil, "token", "create", "--config", cfg2, "--kind", "env")
	_, errOut, code = devRun(t, dir, nil, "token", "create", "--data-dir", gw2, "--kind", "env")
	if code != 2 || !strings.Contains(errOut, "give --site") {
		t.Fatalf("no site known: exit %d, stderr %q", code, errOut)
	}
}

// `token create` run as root (sudo) keeps the token store owned by the
// gateway's user: the files it writes or creates take the owner of the file
// they replace or of the data directory, so the gateway, running as that
// user, can still open, lock and rewrite them.
func TestTokenCreateAsRootKeepsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, as CI runs: the bug is root taking over the file")
	}
	const uid, gid = 65534, 65534 // nobody
	dir := t.TempDir()
	// Let uid 65534 reach the directory and run a copy of the binary.
	for _, p := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "edgeanchor")
	raw, err := os.ReadFile(testbin.Path(t, "./cmd/edgeanchor"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, raw, 0o755); err != nil {
		t.Fatal(err)
	}
	info := `{"v":1,"gateway":"did:ea:00000000000000000000000000000000","site":"site-a"}`
	runAs := func(cred *syscall.Credential, args ...string) (string, error) {
		cmd := exec.Command(bin, args...)
		cmd.Dir = dir
		if cred != nil {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("%v: %w: %s", args, err, stderr.String())
		}
		return string(out), nil
	}
	nobody := &syscall.Credential{Uid: uid, Gid: gid}
	for _, tc := range []struct {
		name       string
		tokensMade bool // the store exists, made by the gateway's user
	}{{"existing store", true}, {"first token", false}} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
			if err := os.Mkdir(data, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(data, gateway.DataDirInfoFile), []byte(info), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(filepath.Join(data, gateway.DataDirInfoFile), uid, gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(data, uid, gid); err != nil {
				t.Fatal(err)
			}
			if tc.tokensMade {
				if _, err := runAs(nobody, "token", "create", "--data-dir", data, "--kind", "env"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := runAs(nil, "token", "create", "--data-dir", data, "--kind", "payroll"); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{identity.TokenFile, identity.TokenLockFile} {
				fi, err := os.Stat(filepath.Join(data, name))
				if err != nil {
					t.Fatal(err)
				}
				st := fi.Sys().(*syscall.Stat_t)
				if st.Uid != uid || st.Gid != gid || fi.Mode().Perm() != 0o600 {
					t.Errorf("%s after token create as root: owner %d:%d mode %v, want %d:%d 0600",
						name, st.Uid, st.Gid, fi.Mode().Perm(), uid, gid)
				}
			}
			// The gateway's user can still lock, read and rewrite the store.
			if _, err := runAs(nobody, "token", "create", "--data-dir", data, "--kind", "survey"); err != nil {
				t.Fatalf("the gateway's user cannot use the store root wrote: %v", err)
			}
			out, err := runAs(nobody, "token", "list", "--data-dir", data)
			if err != nil {
				t.Fatal(err)
			}
			want := 2
			if tc.tokensMade {
				want = 3
			}
			if n := strings.Count(out, `"hash"`); n != want {
				t.Fatalf("listed %d tokens, want %d:\n%s", n, want, out)
			}
		})
	}
}
