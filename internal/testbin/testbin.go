// Package testbin builds the project's binaries once per test process, for
// tests that must run them as real OS processes (kill -9, several ledger
// validators, a foreign MQTT client against a real gateway).
package testbin

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

var (
	mu    sync.Mutex
	built = map[string]string{}
	dir   string
)

// Path returns the path of a freshly built binary of the package at pkg
// (relative to the module root, e.g. "./cmd/edgeanchor"). The binary lives in
// a temporary directory removed when the process exits normally; build
// results are cached by the go tool, so repeated calls are cheap.
func Path(t testing.TB, pkg string) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if p, ok := built[pkg]; ok {
		return p
	}
	if dir == "" {
		d, err := os.MkdirTemp("", "edgeanchor-bin-")
		if err != nil {
			t.Fatalf("testbin: %v", err)
		}
		dir = d
	}
	out := filepath.Join(dir, filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = moduleRoot(t)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("testbin: go build %s: %v\n%s", pkg, err, b)
	}
	built[pkg] = out
	return out
}

func moduleRoot(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("testbin: cannot locate module root")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}
