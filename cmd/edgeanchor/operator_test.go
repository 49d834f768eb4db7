package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/edgeanchor/edgeanchor/device"
)

// What an operator mistypes gets an error that names the key, flag or file
// and what to do, and nothing is made.
func TestOperatorErrorsNameTheFix(t *testing.T) {
	dir := t.TempDir()
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	key := filepath.Join(dir, "dev.pem")
	if err := device.WritePrivateKeyFile(key, priv); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	body := filepath.Join(dir, "body.json")
	if err := os.WriteFile(body, []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "gw.yaml")
	if err := os.WriteFile(cfg, []byte("site: site-a\nmqtt:\n  tpc: 127.0.0.1:1883\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgDur := filepath.Join(dir, "gw-dur.yaml")
	if err := os.WriteFile(cfgDur, []byte("batch_interval: 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgRPC := filepath.Join(dir, "gw-rpc.yaml")
	if err := os.WriteFile(cfgRPC, []byte("ledger_rpc: 127.0.0.1:56657\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	demoDir := filepath.Join(dir, "demo-var")
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"audit without --gateway", []string{"audit", "--ledger", "http://127.0.0.1:1", "--api", "http://127.0.0.1:1"},
			[]string{"--gateway is required"}},
		{"audit without anything", []string{"audit"}, []string{"--gateway, --ledger, --api are required"}},
		{"audit --ledger without scheme", []string{"audit", "--gateway", "did:ea:00000000000000000000000000000000",
			"--ledger", "127.0.0.1:56657", "--api", "http://127.0.0.1:1"}, []string{"--ledger", "127.0.0.1:56657"}},
		{"key readable by others", []string{"envelope", "sign", "--key", key, "--body", body},
			[]string{key + " has mode 0644", "chmod 600 " + key}},
		{"config key typo", []string{"gateway", "--config", cfg}, []string{"line 3: unknown key mqtt.tpc (did you mean mqtt.tcp?)"}},
		{"bare duration", []string{"gateway", "--config", cfgDur}, []string{"line 1: batch_interval", "e.g. 5s"}},
		{"ledger_rpc without scheme", []string{"gateway", "--config", cfgRPC}, []string{"ledger_rpc (\"127.0.0.1:56657\")", "http://host:port"}},
		{"demo profile", []string{"demo", "--dir", demoDir, "--profile", "foo"}, []string{`profile "foo"`, "payroll"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, errOut, code := devRun(t, dir, nil, tc.args...)
			if code == 0 {
				t.Fatalf("exit 0, stdout %q", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr %q lacks %q", errOut, w)
				}
			}
			for _, bad := range []string{"malformed", "gateway.MQTTConfig", "time.Duration", "!!int"} {
				if strings.Contains(errOut, bad) {
					t.Errorf("stderr %q says %q", errOut, bad)
				}
			}
		})
	}
	if _, err := os.Stat(demoDir); !os.IsNotExist(err) {
		t.Errorf("demo --profile foo made %s: %v", demoDir, err)
	}
}
