package deploy

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
)

var units = []string{"edgeanchor-gateway.service", "edgeanchor-ledger.service"}

// installUnits copies the units to dir with ExecStart's /usr/local/bin/edgeanchor
// replaced by bin, so that systemd-analyze checks a command that exists and is
// executable, as it would be once installed.
func installUnits(t *testing.T, dir, bin string) []string {
	t.Helper()
	var paths []string
	for _, u := range units {
		text := readFile(t, filepath.Join(deployDir(t), "systemd", u))
		if !strings.Contains(text, "ExecStart=/usr/local/bin/edgeanchor ") {
			t.Fatalf("%s: ExecStart does not run /usr/local/bin/edgeanchor", u)
		}
		text = strings.ReplaceAll(text, "/usr/local/bin/edgeanchor", bin)
		p := filepath.Join(dir, u)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

// TestSystemdUnitsVerify runs `systemd-analyze verify` on the units pointed at
// a freshly built edgeanchor binary. verify exits 0 on a misspelt key or an
// unparsable value (it only warns, "ignoring"), so any output is a failure too.
func TestSystemdUnitsVerify(t *testing.T) {
	sa := tool(t, "systemd-analyze")
	bin := testbin.Path(t, "./cmd/edgeanchor")
	paths := installUnits(t, t.TempDir(), bin)
	out, err := run(t, nil, sa, append([]string{"verify", "--man=no"}, paths...)...)
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: err=%v\n%s", err, out)
	}

	// The check is not blind: a unit with a bad hardening value is reported.
	bad := strings.Replace(readFile(t, paths[0]), "ProtectSystem=strict", "ProtectSystem=stricter", 1)
	badPath := filepath.Join(t.TempDir(), "edgeanchor-bad.service")
	if err := os.WriteFile(badPath, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	out, _ = run(t, nil, sa, "verify", "--man=no", badPath)
	if !strings.Contains(out, "stricter") {
		t.Fatalf("systemd-analyze verify did not report ProtectSystem=stricter:\n%s", out)
	}
}

// TestSystemdUnitsHardening checks the hardening the units promise, then asks
// `systemd-analyze security` for the exposure score (0 = locked down, 10 =
// unprotected): each unit must score 2.0 or better ("OK").
func TestSystemdUnitsHardening(t *testing.T) {
	sa := tool(t, "systemd-analyze")
	want := []string{
		"User=edgeanchor", "Group=edgeanchor", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"ProtectHome=yes", "PrivateTmp=yes", "PrivateDevices=yes", "CapabilityBoundingSet=\n",
		"AmbientCapabilities=\n", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
		"SystemCallFilter=@system-service", "MemoryDenyWriteExecute=yes", "StateDirectory=edgeanchor/",
		"StateDirectoryMode=0700", "UMask=0077", "Restart=on-failure",
		"ProcSubset=pid\n", "IPAddressDeny=any\n", "IPAddressAllow=localhost ",
	}
	for _, u := range units {
		text := readFile(t, filepath.Join(deployDir(t), "systemd", u))
		mustContain(t, u, text, want...)
		if strings.Contains(text, "ReadWritePaths=") || strings.Contains(text, "DynamicUser=") {
			t.Errorf("%s: state must live in StateDirectory under the dedicated user", u)
		}
	}
	gw := readFile(t, filepath.Join(deployDir(t), "systemd", "edgeanchor-gateway.service"))
	mustContain(t, "gateway unit", gw, "LoadCredential=gateway-key.pem:/etc/edgeanchor/gateway-key.pem",
		"--config /etc/edgeanchor/gateway.yaml")
	// The memory cap is the figure the sizing section measured.
	sizing := docSection(t, "## Sizing")
	m := regexp.MustCompile(`MemoryMax=(\d+[KMG])`).FindStringSubmatch(sizing)
	if m == nil {
		t.Fatal("docs/operations.md's Sizing section names no MemoryMax figure")
	}
	mustContain(t, "gateway unit", gw, "\nMemoryMax="+m[1]+"\n")
	// A config key named in the unit's comments is one the gateway has.
	keys := map[string]reflect.Value{}
	configKeys(reflect.ValueOf(gateway.DefaultConfig()), "", keys)
	for _, m := range regexp.MustCompile(`set ([a-z_.]+) to`).FindAllStringSubmatch(gw, -1) {
		if _, ok := keys[m[1]]; !ok {
			t.Errorf("gateway unit: its comment names config key %s, which gateway.Config does not have", m[1])
		}
	}
	ledger := readFile(t, filepath.Join(deployDir(t), "systemd", "edgeanchor-ledger.service"))
	mustContain(t, "ledger unit", ledger, "ledger start --home /var/lib/edgeanchor/ledger", "StateDirectory=edgeanchor/ledger")
	sysusers := readFile(t, filepath.Join(deployDir(t), "systemd", "edgeanchor.sysusers.conf"))
	mustContain(t, "sysusers", sysusers, "u edgeanchor ")

	bin := testbin.Path(t, "./cmd/edgeanchor")
	paths := installUnits(t, t.TempDir(), bin)
	out, err := run(t, nil, sa, append([]string{"security", "--offline=true", "--threshold=20", "--no-pager"}, paths...)...)
	if err != nil {
		t.Fatalf("systemd-analyze security: exposure above 2.0: %v\n%s", err, out)
	}
	if n := strings.Count(out, "Overall exposure level"); n != len(units) {
		t.Fatalf("systemd-analyze security rated %d units, want %d:\n%s", n, len(units), out)
	}
}
