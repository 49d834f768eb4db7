package deploy

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// deployDir is the absolute path of this folder; moduleRoot its parent.
func deployDir(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate deploy/")
	}
	return filepath.Dir(file)
}

func moduleRoot(t testing.TB) string { return filepath.Dir(deployDir(t)) }

// tool returns the path of an external program the test needs. A missing
// tool fails the test: these checks are the point of the package.
func tool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found in PATH (Debian: apt-get install %s): %v", name, debPackage[name], err)
	}
	return p
}

var debPackage = map[string]string{
	"promtool":        "prometheus",
	"prometheus":      "prometheus",
	"systemd-analyze": "systemd",
	"docker-compose":  "docker-compose",
}

// run runs a command with a bounded time and returns its combined output.
func run(t testing.TB, stdin []byte, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func readYAML(t testing.TB, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func mustContain(t testing.TB, what, text string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(text, s) {
			t.Errorf("%s does not contain %q", what, s)
		}
	}
}

func yamlMarshal(v any) ([]byte, error) { return yaml.Marshal(v) }

// yaml.v3 names used by custom unmarshalers.
type yamlNode = yaml.Node

const (
	yamlSequence = yaml.SequenceNode
	yamlMapping  = yaml.MappingNode
)
