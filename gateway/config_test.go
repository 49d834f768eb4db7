package gateway

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigValidateNamesFieldAndBound(t *testing.T) {
	if err := func() *Config { c := DefaultConfig(); return &c }().Validate(); err != nil {
		t.Fatalf("DefaultConfig does not validate: %v", err)
	}
	cases := []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"data dir", func(c *Config) { c.DataDir = "" }, "data_dir"},
		{"site", func(c *Config) { c.Site = "Site A" }, "site"},
		{"payload", func(c *Config) { c.Limits.MaxPayload = 10 }, "limits.max_payload (10) must be within [256, 1048576]"},
		{"window", func(c *Config) { c.CredentialWindow = time.Second }, "credential_window (1s) must be within [5s, 1h]"},
		{"inflight", func(c *Config) { c.Limits.MaxInFlight = 0 }, "limits.max_inflight (0)"},
		{"client write queue", func(c *Config) { c.Limits.ClientWriteQueue = 8 }, "limits.client_write_queue (8) must be within [16, 65536]"},
		{"v3", func(c *Config) { c.Limits.V3RefusalsBeforeDisconnect = 0 }, "limits.v3_refusals_before_disconnect"},
		{"burst", func(c *Config) { c.Limits.DeviceBurst = 0 }, "limits.device_burst"},
		{"tls pair", func(c *Config) { c.MQTT.TLSCert = "c.pem" }, "mqtt.tls_cert and mqtt.tls_key"},
		{"no listener", func(c *Config) { c.MQTT = MQTTConfig{} }, "mqtt: at least one"},
		{"memtable", func(c *Config) { c.Store.MemTableMB = 1 }, "store.memtable_mb (1)"},
		{"group linger", func(c *Config) { c.Store.GroupLinger = time.Second }, "store.group_linger (1s)"},
		{"open gaps", func(c *Config) { c.Store.MaxOpenGaps = 0 }, "store.max_open_gaps (0) must be within [1, 1024]"},
		{"gc percent", func(c *Config) { c.GCPercent = 10 }, "gc_percent (10)"},
		{"batch size", func(c *Config) { c.BatchSize = 0 }, "batch_size (0)"},
		{"account hash", func(c *Config) {
			c.Accounts = []AccountConfig{{Username: "app", PasswordHash: "plain", Topics: []string{"ea/v1/site/site-a/#"}}}
		}, "accounts[0].password_hash"},
		{"account topic", func(c *Config) {
			c.Accounts = []AccountConfig{{Username: "app", PasswordHash: "$2a$04$C6UzMDM.H6dfI/f/IKxGhuIHxKqUB3pnbTPMG.D6v4EO0VS8rSuxm", Topics: []string{"ea/v1/dev/+/up"}}}
		}, "accounts[0].topics[0]"},
		{"account did", func(c *Config) {
			c.Accounts = []AccountConfig{{Username: "did:ea:x", PasswordHash: "$2a$04$C6UzMDM.H6dfI/f/IKxGhuIHxKqUB3pnbTPMG.D6v4EO0VS8rSuxm", Topics: []string{"ea/v1/site/a/#"}}}
		}, "accounts[0].username"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig()
			tc.mod(&c)
			err := c.Validate()
			if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want ErrConfig naming %q", err, tc.want)
			}
		})
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "gw.yaml")
	hash := "$2a$04$C6UzMDM.H6dfI/f/IKxGhuIHxKqUB3pnbTPMG.D6v4EO0VS8rSuxm"
	yaml := "site: site-b\nlimits:\n  max_payload: 8192\ncredential_window: 60s\naccounts:\n  - username: dash\n    password_hash: \"" +
		hash + "\"\n    topics: [\"ea/v1/site/site-b/records/#\"]\n"
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Site != "site-b" || c.Limits.MaxPayload != 8192 || c.CredentialWindow != time.Minute || c.Limits.DeviceRate != DefaultConfig().Limits.DeviceRate {
		t.Fatalf("loaded %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	red := c.Redacted()
	if strings.Contains(red, hash) || !strings.Contains(red, "<redacted>") || !strings.Contains(red, "site-b") {
		t.Fatalf("Redacted() leaks or loses data:\n%s", red)
	}
	if c.Accounts[0].PasswordHash != hash {
		t.Fatal("Redacted modified the config")
	}
	if err := os.WriteFile(p, []byte("sitee: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadConfig(p); !errors.Is(err, ErrConfig) {
		t.Fatalf("unknown key: %v", err)
	}
}
