package deploy

import (
	"debug/elf"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	cmttypes "github.com/cometbft/cometbft/types"
	"gopkg.in/yaml.v3"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway"
	"github.com/edgeanchor/edgeanchor/internal/testbin"
	"github.com/edgeanchor/edgeanchor/ledger"
)

// composeFile is the part of the Compose Specification the test reads.
// yaml.v3 applies the file's merge keys (<<: *edgeanchor) as Compose does.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
	Networks map[string]any            `yaml:"networks"`
}

type composeService struct {
	Image string `yaml:"image"`
	Build *struct {
		Context    string `yaml:"context"`
		Dockerfile string `yaml:"dockerfile"`
		Target     string `yaml:"target"`
	} `yaml:"build"`
	Hostname  string    `yaml:"hostname"`
	Command   []string  `yaml:"command"`
	Ports     []string  `yaml:"ports"`
	Volumes   []string  `yaml:"volumes"`
	Networks  []string  `yaml:"networks"`
	Restart   string    `yaml:"restart"`
	DependsOn dependsOn `yaml:"depends_on"`
}

// dependsOn accepts both forms of depends_on: a list of names, or a map of
// name → {condition}.
type dependsOn map[string]string

func (d *dependsOn) UnmarshalYAML(value *yamlNode) error {
	out := dependsOn{}
	switch value.Kind {
	case yamlSequence:
		var names []string
		if err := value.Decode(&names); err != nil {
			return err
		}
		for _, n := range names {
			out[n] = "service_started"
		}
	case yamlMapping:
		var m map[string]struct {
			Condition string `yaml:"condition"`
		}
		if err := value.Decode(&m); err != nil {
			return err
		}
		for n, c := range m {
			out[n] = c.Condition
		}
	default:
		return fmt.Errorf("depends_on: want a list or a map")
	}
	*d = out
	return nil
}

func loadCompose(t testing.TB) composeFile {
	t.Helper()
	var c composeFile
	readYAML(t, filepath.Join(deployDir(t), "compose.yaml"), &c)
	return c
}

// TestComposeFile checks deploy/compose.yaml beyond what `docker compose
// config` checks (TestDockerComposeConfig): the file is parsed with yaml.v3
// and every reference in it is resolved against this repository: services,
// images and builds, Dockerfile targets, ports, volumes, networks,
// depends_on, mounted files, the scrape targets of prometheus.yml, and the
// gateway configs (parsed and validated by the gateway's own config loader).
func TestComposeFile(t *testing.T) {
	c := loadCompose(t)
	dir := deployDir(t)
	want := []string{"testnet", "validator0", "validator1", "validator2", "validator3", "gateway-a", "gateway-b", "prometheus", "grafana"}
	for _, w := range want {
		if _, ok := c.Services[w]; !ok {
			t.Errorf("service %s is missing", w)
		}
	}
	if len(c.Services) != len(want) {
		t.Errorf("services = %v, want %v", sortedKeys(c.Services), want)
	}
	stages := dockerfileStages(t)
	hostPorts := map[string]string{}
	for name, s := range c.Services {
		if s.Image == "" {
			t.Errorf("%s: no image", name)
		}
		if s.Build != nil {
			if s.Build.Context != ".." || s.Build.Dockerfile != "deploy/Dockerfile" {
				t.Errorf("%s: build %+v, want context .. and dockerfile deploy/Dockerfile", name, *s.Build)
			}
			if s.Build.Target != "" && !contains(stages, s.Build.Target) {
				t.Errorf("%s: build target %q is not a stage of deploy/Dockerfile (%v)", name, s.Build.Target, stages)
			}
		}
		for dep, cond := range s.DependsOn {
			if _, ok := c.Services[dep]; !ok {
				t.Errorf("%s: depends_on unknown service %s", name, dep)
			}
			if cond != "service_started" && cond != "service_healthy" && cond != "service_completed_successfully" {
				t.Errorf("%s: depends_on %s: condition %q", name, dep, cond)
			}
		}
		for _, n := range s.Networks {
			if _, ok := c.Networks[n]; !ok {
				t.Errorf("%s: network %s is not declared", name, n)
			}
		}
		if len(s.Networks) == 0 {
			t.Errorf("%s: on no network", name)
		}
		for _, p := range s.Ports {
			parts := strings.Split(p, ":")
			if len(parts) != 3 || parts[0] != "127.0.0.1" {
				t.Errorf("%s: port %q must be 127.0.0.1:HOST:CONTAINER", name, p)
				continue
			}
			for _, n := range parts[1:] {
				if v, err := strconv.Atoi(n); err != nil || v < 1 || v > 65535 {
					t.Errorf("%s: port %q: bad number %q", name, p, n)
				}
			}
			if other, dup := hostPorts[parts[1]]; dup {
				t.Errorf("host port %s published by %s and %s", parts[1], other, name)
			}
			hostPorts[parts[1]] = name
		}
		for _, v := range s.Volumes {
			src, _, ok := strings.Cut(v, ":")
			if !ok {
				t.Errorf("%s: volume %q has no target", name, v)
				continue
			}
			if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
				if _, err := os.Stat(filepath.Join(dir, src)); err != nil {
					t.Errorf("%s: bind mount source %s: %v", name, src, err)
				}
			} else if _, ok := c.Volumes[src]; !ok {
				t.Errorf("%s: volume %s is not declared", name, src)
			}
		}
	}

	// The consortium: four validators, each from our image, each with its
	// own home from the testnet service's volume.
	for k := range 4 {
		name := fmt.Sprintf("validator%d", k)
		s := c.Services[name]
		if got, want := strings.Join(s.Command, " "), fmt.Sprintf("ledger start --home /testnet/node%d", k); got != want {
			t.Errorf("%s: command %q, want %q", name, got, want)
		}
		if s.Image != "edgeanchor:local" || s.Build == nil || s.Build.Target != "" {
			t.Errorf("%s: must run the edgeanchor image built from deploy/Dockerfile", name)
		}
		if s.DependsOn["testnet"] != "service_completed_successfully" {
			t.Errorf("%s: must wait for the testnet service to complete", name)
		}
		if s.Hostname != name {
			t.Errorf("%s: hostname %q: the peers dial %s", name, s.Hostname, name)
		}
	}
	if tn := c.Services["testnet"]; tn.Build == nil || tn.Build.Target != "testnet-init" || tn.Restart != "no" {
		t.Errorf("testnet: must be the one-shot testnet-init build target")
	}

	// Two gateways, each with a config the gateway accepts, pointing at a
	// validator of this file, serving /metrics where prometheus.yml looks.
	var pc promConfig
	readYAML(t, filepath.Join(promDir(t), "prometheus.yml"), &pc)
	scrapeTargets := map[string]bool{}
	for _, sc := range pc.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, tg := range st.Targets {
				scrapeTargets[tg] = true
				host, _, err := net.SplitHostPort(tg)
				if err != nil {
					t.Errorf("prometheus.yml target %q: %v", tg, err)
				} else if _, ok := c.Services[host]; !ok {
					t.Errorf("prometheus.yml target %q is not a compose service", tg)
				}
			}
		}
	}
	for _, name := range []string{"gateway-a", "gateway-b"} {
		s := c.Services[name]
		if got := strings.Join(s.Command, " "); got != "gateway --config /etc/edgeanchor/gateway.yaml" {
			t.Errorf("%s: command %q", name, got)
		}
		var confSrc string
		for _, v := range s.Volumes {
			if src, dst, _ := strings.Cut(v, ":"); strings.HasPrefix(dst, "/etc/edgeanchor/gateway.yaml") {
				confSrc = src
			}
		}
		if confSrc == "" {
			t.Errorf("%s: no config mounted at /etc/edgeanchor/gateway.yaml", name)
			continue
		}
		cfg, err := gateway.LoadConfig(filepath.Join(dir, confSrc))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
		if !strings.HasPrefix(cfg.KeyPath, "/testnet/"+name+"/") {
			t.Errorf("%s: key_path %s is not the key the testnet service makes for it", name, cfg.KeyPath)
		}
		if !strings.HasPrefix(cfg.DataDir, "/var/lib/edgeanchor/") {
			t.Errorf("%s: data_dir %s is not on its data volume", name, cfg.DataDir)
		}
		host := strings.TrimSuffix(strings.TrimPrefix(cfg.LedgerRPC, "http://"), ":26657")
		if _, ok := c.Services[host]; !ok || !strings.HasPrefix(host, "validator") {
			t.Errorf("%s: ledger_rpc %s is not a validator of this file", name, cfg.LedgerRPC)
		}
		_, port, _ := net.SplitHostPort(cfg.HTTP.Addr)
		if !scrapeTargets[name+":"+port] {
			t.Errorf("%s: prometheus.yml does not scrape %s:%s", name, name, port)
		}
		if s.DependsOn["testnet"] != "service_completed_successfully" {
			t.Errorf("%s: must wait for the testnet service (its key)", name)
		}
	}
	for k := range 4 {
		if !scrapeTargets[fmt.Sprintf("validator%d:26660", k)] {
			t.Errorf("prometheus.yml does not scrape validator%d:26660", k)
		}
	}

	// Prometheus and Grafana get deploy's files where they read them.
	mustContain(t, "prometheus volumes", strings.Join(c.Services["prometheus"].Volumes, "\n"), "./prometheus:/etc/prometheus:ro")
	mustContain(t, "prometheus command", strings.Join(c.Services["prometheus"].Command, "\n"), "--config.file=/etc/prometheus/prometheus.yml")
	mustContain(t, "grafana volumes", strings.Join(c.Services["grafana"].Volumes, "\n"),
		"./grafana/provisioning:/etc/grafana/provisioning:ro", "./grafana/dashboards:/var/lib/grafana/dashboards:ro")
}

// TestDockerComposeConfig validates compose.yaml with a real Compose
// implementation. This machine has no Docker engine and no compose plugin
// (`docker compose` is an unknown command), but Debian's docker-compose
// (1.29, package docker-compose) validates and resolves a file without an
// engine: `config -q` checks it against the Compose schema, `config
// --services` lists the services it resolved.
func TestDockerComposeConfig(t *testing.T) {
	dc := tool(t, "docker-compose")
	file := filepath.Join(deployDir(t), "compose.yaml")
	out, err := run(t, nil, dc, "--project-name", "edgeanchor", "-f", file, "config", "-q")
	if err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("docker-compose config -q: %v\n%s", err, out)
	}
	out, err = run(t, nil, dc, "--project-name", "edgeanchor", "-f", file, "config", "--services")
	if err != nil {
		t.Fatalf("docker-compose config --services: %v\n%s", err, out)
	}
	got := strings.Fields(out)
	sort.Strings(got)
	want := sortedKeys(loadCompose(t).Services)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("docker-compose resolves services %v, want %v", got, want)
	}
	// Resolved: the merge keys gave every validator the image and its build.
	out, err = run(t, nil, dc, "--project-name", "edgeanchor", "-f", file, "config")
	if err != nil {
		t.Fatalf("docker-compose config: %v\n%s", err, out)
	}
	var resolved struct {
		Services map[string]struct {
			Image string `yaml:"image"`
			Build *struct {
				Dockerfile string `yaml:"dockerfile"`
			} `yaml:"build"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal([]byte(out), &resolved); err != nil {
		t.Fatalf("docker-compose config output: %v", err)
	}
	for k := range 4 {
		s := resolved.Services[fmt.Sprintf("validator%d", k)]
		if s.Image != "edgeanchor:local" || s.Build == nil || s.Build.Dockerfile != "deploy/Dockerfile" {
			t.Errorf("validator%d resolved to image %q build %+v", k, s.Image, s.Build)
		}
	}

	// The check is not blind: a service depending on a missing one is refused.
	bad := filepath.Join(t.TempDir(), "compose.yaml")
	text := strings.Replace(readFile(t, file), "depends_on: [prometheus]", "depends_on: [prometheus-missing]", 1)
	if err := os.WriteFile(bad, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := run(t, nil, dc, "--project-name", "edgeanchor", "-f", bad, "config", "-q"); err == nil {
		t.Errorf("docker-compose accepted a dependency on a missing service:\n%s", out)
	}
}

var fromRE = regexp.MustCompile(`(?m)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$`)

// dockerfileStages returns the named stages of deploy/Dockerfile.
func dockerfileStages(t testing.TB) []string {
	t.Helper()
	var out []string
	for _, m := range fromRE.FindAllStringSubmatch(readFile(t, filepath.Join(deployDir(t), "Dockerfile")), -1) {
		if m[2] != "" {
			out = append(out, m[2])
		}
	}
	return out
}

// TestDockerfile: the runtime image is a minimal static base running as a
// non-root user, the binary is built with CGO_ENABLED=0, and that build is
// really static (no ELF interpreter, no shared libraries).
func TestDockerfile(t *testing.T) {
	df := readFile(t, filepath.Join(deployDir(t), "Dockerfile"))
	froms := fromRE.FindAllStringSubmatch(df, -1)
	if len(froms) < 2 {
		t.Fatalf("Dockerfile: want a build stage and a runtime stage, got %d FROM lines", len(froms))
	}
	final := froms[len(froms)-1]
	if !strings.HasPrefix(final[1], "gcr.io/distroless/static") || !strings.HasSuffix(final[1], ":nonroot") {
		t.Errorf("runtime base %q, want gcr.io/distroless/static…:nonroot", final[1])
	}
	_, runtime, _ := strings.Cut(df, final[0])
	mustContain(t, "runtime stage", runtime, "USER 65532:65532", `ENTRYPOINT ["/usr/local/bin/edgeanchor"]`,
		"COPY --from=build /out/edgeanchor /usr/local/bin/edgeanchor")
	mustContain(t, "Dockerfile", df, "CGO_ENABLED=0 GOOS=linux go build -trimpath", "./cmd/edgeanchor")
	if _, err := os.Stat(filepath.Join(deployDir(t), "Dockerfile.dockerignore")); err != nil {
		t.Errorf("Dockerfile.dockerignore: %v", err)
	}

	out := filepath.Join(t.TempDir(), "edgeanchor")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/edgeanchor")
	cmd.Dir = moduleRoot(t)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, b)
	}
	f, err := elf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the CGO_ENABLED=0 binary has an ELF interpreter: it is not static")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("the CGO_ENABLED=0 binary needs shared libraries %v (%v)", libs, err)
	}
}

// TestComposeTestnetInit runs the compose file's testnet-init.sh (the script
// the one-shot testnet service runs) with a freshly built edgeanchor and
// checks what it makes: four validator homes whose CometBFT config the ledger
// loads, listening on 0.0.0.0 on the default ports and dialling each other by
// service name; one genesis, which admits both gateways with the keys the
// gateways' configs point at; and a second run that changes nothing.
func TestComposeTestnetInit(t *testing.T) {
	bin := testbin.Path(t, "./cmd/edgeanchor")
	out := filepath.Join(t.TempDir(), "testnet")
	script := filepath.Join(deployDir(t), "compose", "testnet-init.sh")
	runScript := func() string {
		cmd := exec.Command("sh", script, out)
		cmd.Env = append(os.Environ(), "EDGEANCHOR="+bin)
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("testnet-init.sh: %v\n%s", err, b)
		}
		return string(b)
	}
	runScript()

	var genesis []byte
	nodeIDs := make([]string, 4)
	for k := range 4 {
		home := filepath.Join(out, fmt.Sprintf("node%d", k))
		conf, err := ledger.LoadConfig(home)
		if err != nil {
			t.Fatalf("node%d: %v", k, err)
		}
		if conf.P2P.ListenAddress != "tcp://0.0.0.0:26656" || conf.RPC.ListenAddress != "tcp://0.0.0.0:26657" ||
			conf.Instrumentation.PrometheusListenAddr != ":26660" || !conf.Instrumentation.Prometheus {
			t.Errorf("node%d: p2p %s, rpc %s, prometheus %v %s; want 0.0.0.0:26656, 0.0.0.0:26657, on :26660", k,
				conf.P2P.ListenAddress, conf.RPC.ListenAddress, conf.Instrumentation.Prometheus, conf.Instrumentation.PrometheusListenAddr)
		}
		peers := strings.Split(conf.P2P.PersistentPeers, ",")
		if len(peers) != 3 {
			t.Errorf("node%d: persistent_peers %q, want the 3 others", k, conf.P2P.PersistentPeers)
		}
		for _, p := range peers {
			id, addr, _ := strings.Cut(p, "@")
			host, port, _ := net.SplitHostPort(addr)
			if !regexp.MustCompile(`^validator[0-3]$`).MatchString(host) || host == fmt.Sprintf("validator%d", k) || port != "26656" {
				t.Errorf("node%d: peer %q, want another validatorJ:26656", k, p)
			}
			j, _ := strconv.Atoi(strings.TrimPrefix(host, "validator"))
			if nodeIDs[j] != "" && nodeIDs[j] != id {
				t.Errorf("validator%d has two node ids: %s, %s", j, nodeIDs[j], id)
			}
			nodeIDs[j] = id
		}
		g, err := os.ReadFile(conf.GenesisFile())
		if err != nil {
			t.Fatal(err)
		}
		if genesis == nil {
			genesis = g
		} else if string(g) != string(genesis) {
			t.Errorf("node%d has another genesis", k)
		}
		if _, err := cmttypes.GenesisDocFromFile(conf.GenesisFile()); err != nil {
			t.Errorf("node%d: genesis: %v", k, err)
		}
	}
	var doc struct {
		ChainID  string          `json:"chain_id"`
		AppState json.RawMessage `json:"app_state"`
	}
	if err := json.Unmarshal(genesis, &doc); err != nil {
		t.Fatal(err)
	}
	state, err := anchor.ParseGenesisState(doc.AppState)
	if err != nil {
		t.Fatalf("genesis app_state: %v", err)
	}
	if doc.ChainID != "edgeanchor-compose" {
		t.Errorf("chain id %q", doc.ChainID)
	}
	sites := map[string]device.DID{}
	for _, g := range state.Gateways {
		sites[g.Site] = g.DID
	}
	for _, gw := range []string{"gateway-a", "gateway-b"} {
		cfg, err := gateway.LoadConfig(filepath.Join(deployDir(t), "compose", gw+".yaml"))
		if err != nil {
			t.Fatal(err)
		}
		keyPath := filepath.Join(out, strings.TrimPrefix(cfg.KeyPath, "/testnet/"))
		signer, err := device.LoadKeySigner(keyPath)
		if err != nil {
			t.Fatalf("%s: key %s: %v", gw, keyPath, err)
		}
		if info, err := os.Stat(keyPath); err != nil || info.Mode().Perm() != 0o600 {
			t.Errorf("%s: key mode %v, want 0600 (%v)", gw, info.Mode().Perm(), err)
		}
		if sites[cfg.Site] != signer.DID() {
			t.Errorf("%s: genesis admits %q for site %s, the gateway's key is %s", gw, sites[cfg.Site], cfg.Site, signer.DID())
		}
	}

	// A second run keeps everything.
	if got := runScript(); !strings.Contains(got, "already made") {
		t.Errorf("second run: %q", got)
	}
	again, err := os.ReadFile(filepath.Join(out, "node0", "config", "genesis.json"))
	if err != nil || string(again) != string(genesis) {
		t.Errorf("the second run changed the genesis (%v)", err)
	}
}
