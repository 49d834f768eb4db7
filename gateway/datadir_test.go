package gateway

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A gateway marks its data directory with gateway.json (its DID and site);
// CheckDataDir accepts such a directory, or one with records/ or tokens, and
// refuses any other naming what is missing.
func TestDataDirInfo(t *testing.T) {
	cfg := itConfig(t)
	cfg.Site = "site-m"
	e := itStart(t, cfg, nil, nil)
	info, err := CheckDataDir(cfg.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if info.Site != "site-m" || info.Gateway != e.gwKey.DID() {
		t.Fatalf("gateway.json = %+v, want site-m and %s", info, e.gwKey.DID())
	}
	fi, err := os.Stat(filepath.Join(cfg.DataDir, DataDirInfoFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("gateway.json: %v %v", err, fi)
	}

	dir := t.TempDir()
	for _, tc := range []struct{ path, want string }{
		{filepath.Join(dir, "nope"), "does not exist"},
		{dir, "holds no gateway.json, records/ or tokens.json"},
	} {
		if _, err := CheckDataDir(tc.path); !errors.Is(err, ErrNoGateway) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckDataDir(%s) = %v, want ErrNoGateway naming %q", tc.path, err, tc.want)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "records"), 0o700); err != nil {
		t.Fatal(err)
	}
	if info, err := CheckDataDir(dir); err != nil || info.Site != "" {
		t.Errorf("a directory with records/ only: %+v, %v", info, err)
	}
	if err := os.WriteFile(filepath.Join(dir, DataDirInfoFile), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckDataDir(dir); err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Errorf("corrupt gateway.json: %v", err)
	}
}
