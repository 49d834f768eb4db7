package gateway

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// LoadConfig names a bad key or value by its key path and line, suggests
// the key a typo was meant to be, and says how durations are written,
// instead of naming the Go types the file is decoded into.
func TestLoadConfigErrorsNameKeys(t *testing.T) {
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"typo nested", "site: site-b\nmqtt:\n  tpc: 127.0.0.1:1883\n",
			[]string{"line 3: unknown key mqtt.tpc (did you mean mqtt.tcp?)"}},
		{"typo top", "batch_intervall: 2s\n", []string{"line 1: unknown key batch_intervall (did you mean batch_interval?)"}},
		{"unknown far", "mqtt:\n  websocket_port: 1\n", []string{"line 2: unknown key mqtt.websocket_port"}},
		{"bare int duration", "store:\n  group_linger: 5\n", []string{"line 2: store.group_linger", `"5" is not a duration`, "5s"}},
		{"word for int", "limits:\n  max_payload: big\n", []string{"line 2: limits.max_payload", "whole number"}},
		{"mapping for scalar", "site:\n  a: b\n", []string{"line 2: site must be a single value"}},
		{"scalar for section", "limits: 5\n", []string{"line 1: limits must be a mapping"}},
		{"account key", "accounts:\n  - username: a\n    pasword_hash: x\n",
			[]string{"line 3: unknown key accounts[0].pasword_hash (did you mean accounts[0].password_hash?)"}},
		{"forged key", "\"a\\nOK\": 1\n", []string{`unknown key "a\nOK"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "gw.yaml")
			if err := os.WriteFile(p, []byte(tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(p)
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("LoadConfig = %v, want ErrConfig", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			for _, goName := range []string{"gateway.", "time.Duration", "!!int", "!!str"} {
				if strings.Contains(err.Error(), goName) {
					t.Errorf("error %q names a Go type or YAML tag (%s)", err, goName)
				}
			}
		})
	}
}

// The ledger_rpc check names the key, so that a URL without a scheme is
// reported where it is set rather than by the ledger client.
func TestValidateLedgerRPC(t *testing.T) {
	for _, u := range []string{"127.0.0.1:56657", "tcp://127.0.0.1:26657", "http://", "http://u:p@127.0.0.1:26657", ""} {
		c := DefaultConfig()
		c.LedgerRPC = u
		err := c.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "ledger_rpc") {
			t.Errorf("ledger_rpc %q: Validate() = %v, want an error naming ledger_rpc", u, err)
		}
	}
	for _, u := range []string{"http://127.0.0.1:26657", "https://[::1]:26657", "http://validator1:26657/"} {
		c := DefaultConfig()
		c.LedgerRPC = u
		if err := c.Validate(); err != nil {
			t.Errorf("ledger_rpc %q: %v", u, err)
		}
	}
}

func TestConfigKeys(t *testing.T) {
	keys := ConfigKeys()
	for _, want := range []string{"data_dir", "mqtt.tcp", "store.group_linger", "limits.device_rate"} {
		if !slices.Contains(keys, want) {
			t.Errorf("ConfigKeys() lacks %s: %v", want, keys)
		}
	}
	if slices.Contains(keys, "accounts") || slices.Contains(keys, "mqtt") {
		t.Errorf("ConfigKeys() lists a non-scalar: %v", keys)
	}
	cfg := DefaultConfig()
	for _, k := range keys {
		if _, ok := ConfigField(&cfg, k); !ok {
			t.Errorf("ConfigField(%s) not found", k)
		}
	}
	v, _ := ConfigField(&cfg, "store.batch_size")
	if v.IsValid() {
		t.Error("ConfigField found a key Config does not have")
	}
	v, _ = ConfigField(&cfg, "limits.max_payload")
	v.SetInt(999)
	if cfg.Limits.MaxPayload != 999 {
		t.Error("ConfigField does not address the config's own field")
	}
}
