package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// promConfig is the part of prometheus.yml the tests look at.
type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		MetricsPath   string `yaml:"metrics_path"`
		StaticConfigs []struct {
			Targets []string          `yaml:"targets"`
			Labels  map[string]string `yaml:"labels"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

type ruleFile struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

type ruleTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name          string `yaml:"name"`
		AlertRuleTest []struct {
			EvalTime  string           `yaml:"eval_time"`
			Alertname string           `yaml:"alertname"`
			ExpAlerts []map[string]any `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

func promDir(t testing.TB) string { return filepath.Join(deployDir(t), "prometheus") }

func TestPromtoolCheckConfig(t *testing.T) {
	promtool := tool(t, "promtool")
	out, err := run(t, nil, promtool, "check", "config", filepath.Join(promDir(t), "prometheus.yml"))
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	mustContain(t, "promtool check config output", out, "SUCCESS", "1 rule files found")

	// The jobs the rules and dashboards select on, on the documented ports.
	var cfg promConfig
	readYAML(t, filepath.Join(promDir(t), "prometheus.yml"), &cfg)
	ports := map[string]string{"edgeanchor-gateway": ":8480", "edgeanchor-ledger": ":26660"}
	labels := map[string]string{"edgeanchor-gateway": "site", "edgeanchor-ledger": "org"}
	seen := map[string]int{}
	for _, sc := range cfg.ScrapeConfigs {
		port, ok := ports[sc.JobName]
		if !ok {
			t.Errorf("unexpected job %q", sc.JobName)
			continue
		}
		if sc.MetricsPath != "/metrics" {
			t.Errorf("job %s: metrics_path %q, want /metrics", sc.JobName, sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			if st.Labels[labels[sc.JobName]] == "" {
				t.Errorf("job %s: targets %v lack the %q label", sc.JobName, st.Targets, labels[sc.JobName])
			}
			for _, tg := range st.Targets {
				if !strings.HasSuffix(tg, port) {
					t.Errorf("job %s: target %q is not on port %s", sc.JobName, tg, port)
				}
				seen[sc.JobName]++
			}
		}
	}
	if seen["edgeanchor-gateway"] != 2 || seen["edgeanchor-ledger"] != 4 {
		t.Errorf("targets per job = %v, want 2 gateways and 4 ledger nodes (the compose deployment)", seen)
	}
}

func TestPromtoolCheckRules(t *testing.T) {
	promtool := tool(t, "promtool")
	out, err := run(t, nil, promtool, "check", "rules", filepath.Join(promDir(t), "alerts.yml"))
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	mustContain(t, "promtool check rules output", out, "SUCCESS")
}

func TestPromtoolTestRules(t *testing.T) {
	promtool := tool(t, "promtool")
	out, err := run(t, nil, promtool, "test", "rules", filepath.Join(promDir(t), "alerts_test.yml"))
	if err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	mustContain(t, "promtool test rules output", out, "SUCCESS")
}

// TestPromtoolTestRulesCatchesABrokenRule proves the unit tests can fail: the
// same tests against a copy of alerts.yml with one threshold changed must fail.
func TestPromtoolTestRulesCatchesABrokenRule(t *testing.T) {
	promtool := tool(t, "promtool")
	dir := t.TempDir()
	rules := readFile(t, filepath.Join(promDir(t), "alerts.yml"))
	broken := strings.Replace(rules, "edgeanchor_anchor_lag_seconds > 60", "edgeanchor_anchor_lag_seconds > 600", 1)
	if broken == rules {
		t.Fatal("anchor lag threshold not found in alerts.yml")
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.yml"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := readFile(t, filepath.Join(promDir(t), "alerts_test.yml"))
	if err := os.WriteFile(filepath.Join(dir, "alerts_test.yml"), []byte(tests), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, nil, promtool, "test", "rules", filepath.Join(dir, "alerts_test.yml"))
	if err == nil {
		t.Fatalf("promtool test rules passed with a broken anchor lag rule:\n%s", out)
	}
	mustContain(t, "promtool output", out, "EdgeanchorAnchorLagHigh")
}

// TestEveryAlertIsTestedAndDocumented: each alert has a promtool case where it
// fires and one where it must not, a severity, a summary, and a runbook anchor
// that exists in docs/operations.md.
func TestEveryAlertIsTestedAndDocumented(t *testing.T) {
	var rf ruleFile
	readYAML(t, filepath.Join(promDir(t), "alerts.yml"), &rf)
	var rt ruleTests
	readYAML(t, filepath.Join(promDir(t), "alerts_test.yml"), &rt)
	if len(rt.RuleFiles) != 1 || rt.RuleFiles[0] != "alerts.yml" {
		t.Fatalf("alerts_test.yml rule_files = %v, want [alerts.yml]", rt.RuleFiles)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range rt.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	ops := readFile(t, filepath.Join(moduleRoot(t), "docs", "operations.md"))
	anchors := markdownAnchors(ops)
	want := []string{
		"EdgeanchorGatewayDown", "EdgeanchorAnchorLagHigh", "EdgeanchorRefusalRatioHigh",
		"EdgeanchorDevicesOffline", "EdgeanchorValidatorMissing", "EdgeanchorLedgerHeightStalled",
		"EdgeanchorStoreDiskFillingUp", "EdgeanchorStoreDiskAlmostFull", "EdgeanchorAnchorRefused",
		"EdgeanchorGatewayLedgerStale",
	}
	var got []string
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			got = append(got, r.Alert)
			if !fires[r.Alert] {
				t.Errorf("%s: no promtool test case where it fires", r.Alert)
			}
			if !quiet[r.Alert] {
				t.Errorf("%s: no promtool test case where it must stay quiet", r.Alert)
			}
			if s := r.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: summary and description annotations are required", r.Alert)
			}
			rb := r.Annotations["runbook"]
			anchor, ok := strings.CutPrefix(rb, "docs/operations.md#")
			if !ok || anchor != strings.ToLower(r.Alert) {
				t.Errorf("%s: runbook %q, want docs/operations.md#%s", r.Alert, rb, strings.ToLower(r.Alert))
			} else if !anchors[anchor] {
				t.Errorf("%s: docs/operations.md has no heading %q", r.Alert, r.Alert)
			}
		}
	}
	for _, w := range want {
		if !contains(got, w) {
			t.Errorf("alerts.yml lacks %s (got %v)", w, got)
		}
	}
}

// markdownAnchors returns GitHub-style anchors of the headings of a markdown text.
func markdownAnchors(md string) map[string]bool {
	drop := regexp.MustCompile("[^a-z0-9 _-]")
	out := map[string]bool{}
	for _, line := range strings.Split(md, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		a := drop.ReplaceAllString(strings.ToLower(h), "")
		out[strings.ReplaceAll(a, " ", "-")] = true
	}
	return out
}

// sortedKeys is used in failure messages.
func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
