package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/device"
)

// TestExitCodes runs every command, as the real binary, with each kind of
// outcome it can have, and checks the one rule (README, "Commands"): 0
// success, 1 the check failed (or the input's content is refused, or the
// ledger refused), 2 a usage error (unknown flag, wrong arguments, a
// required flag missing) or an I/O error (a missing file, a server that
// cannot be reached). Findings of audit and a ledger's refusal need a
// running ledger: audit_test.go checks those exit 1.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-file")
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notKey := write("not-a-key.pem", "hello\n")

	// A device key, a valid body and envelope, and a tampered envelope.
	devMustRun(t, dir, nil, "keygen", "--out", "dev.pem")
	signer, err := device.LoadKeySigner(filepath.Join(dir, "dev.pem"))
	if err != nil {
		t.Fatal(err)
	}
	body := write("body.json", devDustBody(signer.DID(), 1, "35.5"))
	badBody := write("bad-body.json", devDustBody(signer.DID(), 0, "35.5"))
	env := devMustRun(t, dir, nil, "envelope", "sign", "--key", "dev.pem", "--body", body)
	envPath := write("env.json", env)
	badEnv := write("bad-env.json", strings.Replace(env, `"sig":"M`, `"sig":"N`, 1))

	// The golden bundle and its trust file, and a tampered bundle.
	bundle, trust := goldenPaths()
	for _, p := range []*string{&bundle, &trust} {
		if *p, err = filepath.Abs(*p); err != nil {
			t.Fatal(err)
		}
	}
	b, err := evidence.ReadBundleFile(bundle)
	if err != nil {
		t.Fatal(err)
	}
	b.Merkle.Path[0][0] ^= 1
	tampered, _ := b.Encode()
	badBundle := write("bad-bundle.json", string(tampered))

	// A ledger home (genesis trust export) and a gateway directory.
	home := filepath.Join(dir, "ledger")
	devMustRun(t, dir, nil, "ledger", "init", "--home", home, "--chain-id", "exit-test")
	devMustRun(t, dir, nil, "gateway", "init", "--dir", "gw")
	gwConfig := filepath.Join(dir, "gw", "gateway.yaml")
	unreachable := "http://127.0.0.1:1"

	type run struct {
		kind  string
		args  []string
		stdin string
		want  int
	}
	cases := map[string][]run{
		"keygen": {
			{"ok", []string{"keygen", "--out", "k2.pem"}, "", 0},
			{"unknown flag", []string{"keygen", "--out", "k3.pem", "--bogus"}, "", 2},
			{"missing flag", []string{"keygen"}, "", 2},
			{"unwritable path", []string{"keygen", "--out", filepath.Join(notKey, "k.pem")}, "", 2},
		},
		"did": {
			{"ok", []string{"did", "--pub", "dev.pub.pem"}, "", 0},
			{"unknown flag", []string{"did", "--pub", "dev.pub.pem", "--bogus"}, "", 2},
			{"missing file", []string{"did", "--pub", missing}, "", 2},
			{"not a key", []string{"did", "--pub", notKey}, "", 1},
		},
		"envelope sign": {
			{"ok", []string{"envelope", "sign", "--key", "dev.pem", "--body", body}, "", 0},
			{"unknown flag", []string{"envelope", "sign", "--key", "dev.pem", "--body", body, "--bogus"}, "", 2},
			{"missing file", []string{"envelope", "sign", "--key", "dev.pem", "--body", missing}, "", 2},
			{"missing key file", []string{"envelope", "sign", "--key", missing, "--body", body}, "", 2},
			{"body refused", []string{"envelope", "sign", "--key", "dev.pem", "--body", badBody}, "", 1},
		},
		"envelope verify": {
			{"ok", []string{"envelope", "verify", "--pub", "dev.pub.pem", envPath}, "", 0},
			{"unknown flag", []string{"envelope", "verify", "--pub", "dev.pub.pem", "--bogus", envPath}, "", 2},
			{"missing file", []string{"envelope", "verify", "--pub", "dev.pub.pem", missing}, "", 2},
			{"bad signature", []string{"envelope", "verify", "--pub", "dev.pub.pem", badEnv}, "", 1},
		},
		"verify": {
			{"ok", []string{"verify", bundle, "--trust", trust}, "", 0},
			{"unknown flag", []string{"verify", bundle, "--trust", trust, "--bogus"}, "", 2},
			{"missing argument", []string{"verify", "--trust", trust}, "", 2},
			{"missing file", []string{"verify", missing, "--trust", trust}, "", 2},
			{"check failed", []string{"verify", badBundle, "--trust", trust}, "", 1},
			{"ledger unreachable", []string{"verify", bundle, "--trust", trust, "--ledger", unreachable}, "", 2},
		},
		"audit": {
			{"unknown flag", []string{"audit", "--bogus"}, "", 2},
			{"missing flag", []string{"audit", "--gateway", string(signer.DID())}, "", 2},
			{"ledger unreachable", []string{"audit", "--gateway", string(signer.DID()), "--ledger", unreachable, "--api", unreachable}, "", 2},
		},
		"ledger init": {
			{"unknown flag", []string{"ledger", "init", "--home", filepath.Join(dir, "l2"), "--bogus"}, "", 2},
			{"missing file", []string{"ledger", "init", "--home", filepath.Join(dir, "l3"), "--gateway-pub", missing, "--gateway-site", "s"}, "", 2},
			{"not a key", []string{"ledger", "init", "--home", filepath.Join(dir, "l4"), "--gateway-pub", notKey, "--gateway-site", "s"}, "", 1},
		},
		"ledger start": {
			{"unknown flag", []string{"ledger", "start", "--home", home, "--bogus"}, "", 2},
			{"missing home", []string{"ledger", "start", "--home", missing}, "", 2},
		},
		"ledger export-trust": {
			{"ok", []string{"ledger", "export-trust", "--home", home, "--out", filepath.Join(dir, "t.json")}, "", 0},
			{"unknown flag", []string{"ledger", "export-trust", "--home", home, "--out", filepath.Join(dir, "t2.json"), "--bogus"}, "", 2},
			{"missing home", []string{"ledger", "export-trust", "--home", missing, "--out", filepath.Join(dir, "t3.json")}, "", 2},
			{"node unreachable", []string{"ledger", "export-trust", "--rpc", unreachable, "--out", filepath.Join(dir, "t4.json")}, "", 2},
		},
		"ledger trust update": {
			{"unknown flag", []string{"ledger", "trust", "update", "--trust", trust, "--rpc", unreachable, "--bogus"}, "", 2},
			{"missing flag", []string{"ledger", "trust", "update", "--trust", trust}, "", 2},
			{"missing file", []string{"ledger", "trust", "update", "--trust", missing, "--rpc", unreachable}, "", 2},
			{"not a trust file", []string{"ledger", "trust", "update", "--trust", notKey, "--rpc", unreachable}, "", 1},
			{"node unreachable", []string{"ledger", "trust", "update", "--trust", trust, "--rpc", unreachable}, "", 2},
		},
		"ledger": {
			{"unknown subcommand", []string{"ledger", "bogus"}, "", 2},
			{"no subcommand", []string{"ledger"}, "", 2},
		},
		"gateway": {
			{"unknown flag", []string{"gateway", "--config", gwConfig, "--bogus"}, "", 2},
			{"missing config", []string{"gateway", "--config", missing}, "", 2},
		},
		"gateway init": {
			{"unknown flag", []string{"gateway", "init", "--dir", "gw2", "--bogus"}, "", 2},
			{"exists", []string{"gateway", "init", "--dir", "gw"}, "", 1},
		},
		"gateway passwd": {
			{"ok", []string{"gateway", "passwd"}, "long enough password\n", 0},
			{"unknown flag", []string{"gateway", "passwd", "--bogus"}, "", 2},
			{"refused", []string{"gateway", "passwd"}, "short\n", 1},
		},
		"token create": {
			{"ok", []string{"token", "create", "--site", "site-a", "--kind", "env", "--config", gwConfig}, "", 0},
			{"unknown flag", []string{"token", "create", "--site", "site-a", "--kind", "env", "--config", gwConfig, "--bogus"}, "", 2},
			{"missing flag", []string{"token", "create", "--site", "site-a", "--config", gwConfig}, "", 2},
			{"missing config", []string{"token", "create", "--site", "site-a", "--kind", "env", "--config", missing}, "", 2},
		},
		"token list": {
			{"ok", []string{"token", "list", "--config", gwConfig}, "", 0},
			{"unknown flag", []string{"token", "list", "--config", gwConfig, "--bogus"}, "", 2},
			{"missing config", []string{"token", "list", "--config", missing}, "", 2},
		},
		"demo": {
			{"unknown flag", []string{"demo", "--bogus"}, "", 2},
		},
		"edgeanchor": {
			{"unknown command", []string{"bogus"}, "", 2},
			{"no command", []string{}, "", 2},
			{"help", []string{"help", "verify"}, "", 0},
		},
	}
	for name, runs := range cases {
		for _, r := range runs {
			t.Run(name+"/"+r.kind, func(t *testing.T) {
				out, errOut, code := devRun(t, dir, []byte(r.stdin), r.args...)
				if code != r.want {
					t.Fatalf("edgeanchor %v: exit %d, want %d\nstdout: %s\nstderr: %s", r.args, code, r.want, out, errOut)
				}
				if code != 0 && !bytes.Contains([]byte(errOut), []byte("edgeanchor:")) {
					t.Fatalf("edgeanchor %v: exit %d without a message on stderr: %q", r.args, code, errOut)
				}
			})
		}
	}
}

// TestErrorLineEscaped: the error main prints is escaped too: a trust
// file's chain id with a line break stays on the error's line.
func TestErrorLineEscaped(t *testing.T) {
	var stdout, stderr bytes.Buffer
	bundle, _ := goldenPaths()
	code := run([]string{"verify", bundle, "--trust", filepath.Join(t.TempDir(), "no\nOK: forged")}, &stdout, &stderr)
	if code != 2 || !strings.Contains(stderr.String(), `no\nOK: forged`) || strings.Count(stderr.String(), "\n") != 1 {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
	noForgedLines(t, stdout.String())
}
