package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
)

// docSection returns the text of docs/operations.md from the heading named
// title to the next heading of the same level.
func docSection(t testing.TB, title string) string {
	t.Helper()
	doc := readFile(t, filepath.Join(moduleRoot(t), "docs", "operations.md"))
	_, rest, ok := strings.Cut(doc, "\n"+title+"\n")
	if !ok {
		t.Fatalf("docs/operations.md has no heading %q", title)
	}
	level := title[:strings.IndexByte(title, ' ')+1]
	if i := strings.Index(rest, "\n"+level); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

// configKeys lists the YAML keys of a gateway config (nested as "mqtt.tcp",
// lists of structures as "accounts[]") with their values.
func configKeys(v reflect.Value, prefix string, out map[string]reflect.Value) {
	for i := range v.NumField() {
		f := v.Type().Field(i)
		tag, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		fv := v.Field(i)
		switch {
		case f.Type.Kind() == reflect.Struct:
			configKeys(fv, prefix+tag+".", out)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			out[prefix+tag+"[]"] = fv
		default:
			out[prefix+tag] = fv
		}
	}
}

var backticked = regexp.MustCompile("`([^`]*)`")

// TestOperationsConfigReference: the configuration table of
// docs/operations.md lists exactly the keys of gateway.Config, with the
// defaults of gateway.DefaultConfig.
func TestOperationsConfigReference(t *testing.T) {
	keys := map[string]reflect.Value{}
	configKeys(reflect.ValueOf(gateway.DefaultConfig()), "", keys)
	documented := map[string]bool{}
	for _, line := range strings.Split(docSection(t, "## Gateway configuration"), "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 4 {
			t.Errorf("config table row %q", line)
			continue
		}
		var names, defaults []string
		for _, m := range backticked.FindAllStringSubmatch(cells[1], -1) {
			names = append(names, m[1])
		}
		for _, m := range backticked.FindAllStringSubmatch(cells[2], -1) {
			defaults = append(defaults, m[1])
		}
		for i, name := range names {
			v, ok := keys[name]
			if !ok {
				t.Errorf("docs/operations.md documents %q, which gateway.Config does not have", name)
				continue
			}
			documented[name] = true
			want := ""
			if len(defaults) == len(names) {
				want = defaults[i]
			} else if len(defaults) != 0 {
				t.Errorf("%s: %d defaults for %d keys", name, len(defaults), len(names))
				continue
			}
			if err := sameDefault(v, want); err != nil {
				t.Errorf("docs/operations.md: %s: %v", name, err)
			}
		}
	}
	for name := range keys {
		if !documented[name] {
			t.Errorf("gateway.Config key %s is not in docs/operations.md's configuration table", name)
		}
	}
}

// sameDefault compares a documented default with the value of DefaultConfig
// ("" documents the zero value).
func sameDefault(v reflect.Value, doc string) error {
	if doc == "" {
		if !v.IsZero() {
			return fmt.Errorf("documented without a default, the default is %v", v.Interface())
		}
		return nil
	}
	var same bool
	switch x := v.Interface().(type) {
	case time.Duration:
		d, err := time.ParseDuration(doc)
		same = err == nil && d == x
	case string:
		same = doc == x
	case int:
		same = doc == strconv.Itoa(x)
	case float64:
		f, err := strconv.ParseFloat(doc, 64)
		same = err == nil && f == x
	default:
		return fmt.Errorf("cannot compare a %T", x)
	}
	if !same {
		return fmt.Errorf("documented default %q, the default is %v", doc, v.Interface())
	}
	return nil
}

// TestOperationsSampleGatewayConfig: the sample gateway.yaml of the install
// section is accepted by the gateway's own loader and matches the systemd
// unit: its data_dir is the unit's StateDirectory and its key_path the file
// LoadCredential hands in.
func TestOperationsSampleGatewayConfig(t *testing.T) {
	sec := docSection(t, "### A gateway")
	_, after, ok := strings.Cut(sec, "```yaml\n")
	if !ok {
		t.Fatal("the gateway install section has no yaml sample")
	}
	sample, _, _ := strings.Cut(after, "```")
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	if err := os.WriteFile(path, []byte(sample), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := gateway.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	unit := readFile(t, filepath.Join(deployDir(t), "systemd", "edgeanchor-gateway.service"))
	if cfg.DataDir != "/var/lib/edgeanchor/gateway" || !strings.Contains(unit, "StateDirectory=edgeanchor/gateway\n") {
		t.Errorf("sample data_dir %s is not the unit's StateDirectory", cfg.DataDir)
	}
	if cfg.KeyPath != "/run/credentials/edgeanchor-gateway.service/gateway-key.pem" ||
		!strings.Contains(unit, "LoadCredential=gateway-key.pem:") {
		t.Errorf("sample key_path %s is not the unit's credential", cfg.KeyPath)
	}
	if !strings.Contains(unit, "--config /etc/edgeanchor/gateway.yaml") {
		t.Error("the unit does not read /etc/edgeanchor/gateway.yaml")
	}
}

// TestSystemdExecStartFlags: the command lines of the units are accepted by
// the binary (cobra refuses an unknown flag even with --help).
func TestSystemdExecStartFlags(t *testing.T) {
	bin := testbin.Path(t, "./cmd/edgeanchor")
	for _, u := range units {
		text := readFile(t, filepath.Join(deployDir(t), "systemd", u))
		m := regexp.MustCompile(`(?m)^ExecStart=/usr/local/bin/edgeanchor (.*)$`).FindStringSubmatch(text)
		if m == nil {
			t.Errorf("%s: no ExecStart of /usr/local/bin/edgeanchor", u)
			continue
		}
		args := append(strings.Fields(m[1]), "--help")
		if out, err := run(t, nil, bin, args...); err != nil {
			t.Errorf("%s: edgeanchor %s: %v\n%s", u, strings.Join(args, " "), err, out)
		}
		bad := append(strings.Fields(m[1]), "--no-such-flag", "--help")
		if _, err := run(t, nil, bin, bad...); err == nil {
			t.Errorf("%s: an unknown flag was accepted: the check is blind", u)
		}
	}
}
