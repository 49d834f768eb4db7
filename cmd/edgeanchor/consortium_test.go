package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/ledger/ledgertest"
)

// secretsOf returns the private key material of a member home: the
// validator and node keys' base64 values and the body lines of its SM2
// private key PEMs.
func secretsOf(t *testing.T, home string) []string {
	t.Helper()
	var out []string
	for _, f := range []string{"config/priv_validator_key.json", "config/node_key.json"} {
		b, err := os.ReadFile(filepath.Join(home, f))
		if err != nil {
			t.Fatal(err)
		}
		var k struct {
			PrivKey struct {
				Value string `json:"value"`
			} `json:"priv_key"`
		}
		if err := json.Unmarshal(b, &k); err != nil || len(k.PrivKey.Value) < 40 {
			t.Fatalf("%s: %v (%q)", f, err, k.PrivKey.Value)
		}
		out = append(out, k.PrivKey.Value, k.PrivKey.Value[:40])
	}
	pems, _ := filepath.Glob(filepath.Join(home, "keys", "*.pem"))
	for _, p := range pems {
		if strings.HasSuffix(p, ".pub.pem") {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if len(line) > 20 && !strings.HasPrefix(line, "-----") {
				out = append(out, line)
			}
		}
	}
	return out
}

// TestConsortiumFromMemberFiles: four organisations make their homes apart
// (`ledger init --org`); a coordinator assembles genesis from the four
// public member files alone, none of which (nor the genesis) holds any
// private key material of any home; `genesis show` prints the same hash;
// each member installs it and the four validators commit. Then the
// committee (threshold 3 of 4) admits a gateway from the command line: a
// proposal signed offline (--sign-only, no network) and submitted from the
// file, two approvals; refusals exit 1 with the ledger's reason, usage
// errors exit 2.
func TestConsortiumFromMemberFiles(t *testing.T) {
	dir := t.TempDir()
	coord := filepath.Join(dir, "coordinator")
	if err := os.MkdirAll(coord, 0o700); err != nil {
		t.Fatal(err)
	}
	base := ledgertest.FreeBase(t, 4)
	ports := make([]int, 12)
	for i := range 4 {
		ports[3*i], ports[3*i+1], ports[3*i+2] = base+10*i, base+10*i+1, base+10*i+2
	}
	var homes, rpcs, members []string
	for i := range 4 {
		home := filepath.Join(dir, fmt.Sprintf("org%d", i))
		args := []string{"ledger", "init", "--org", fmt.Sprintf("Org %d", i), "--home", home,
			"--p2p-port", fmt.Sprint(ports[3*i]), "--rpc-port", fmt.Sprint(ports[3*i+1]), "--prometheus-port", fmt.Sprint(ports[3*i+2])}
		if i == 0 {
			args = append(args, "--regulator")
		}
		devMustRun(t, dir, nil, args...)
		if _, err := os.Stat(filepath.Join(home, "config", "genesis.json")); err == nil {
			t.Fatal("a member home has a genesis before assembly")
		}
		// The member sends its public file to the coordinator.
		b, err := os.ReadFile(filepath.Join(home, "member.json"))
		if err != nil {
			t.Fatal(err)
		}
		m := filepath.Join(coord, fmt.Sprintf("org%d.json", i))
		if err := os.WriteFile(m, b, 0o644); err != nil {
			t.Fatal(err)
		}
		homes, members = append(homes, home), append(members, m)
		rpcs = append(rpcs, fmt.Sprintf("http://127.0.0.1:%d", ports[3*i+1]))
	}
	// A home started without genesis says what to do.
	if _, errOut, code := devRun(t, dir, nil, "ledger", "start", "--home", homes[0]); code == 0 || !strings.Contains(errOut, "genesis install") {
		t.Fatalf("start without genesis: exit %d, %s", code, errOut)
	}
	genesis := filepath.Join(coord, "genesis.json")
	args := []string{"ledger", "genesis", "assemble", "--chain-id", "edgeanchor-consortium-test", "--committee-threshold", "3", "--out", genesis}
	for _, m := range members {
		args = append(args, "--member", m)
	}
	out := devMustRun(t, coord, nil, args...)
	hash := regexp.MustCompile(`sha256  ([0-9a-f]{64})`).FindStringSubmatch(out)
	peers := regexp.MustCompile(`persistent_peers = "([^"]+)"`).FindStringSubmatch(out)
	if hash == nil || peers == nil || strings.Count(peers[1], "@") != 4 {
		t.Fatalf("assemble output lacks the hash or the four peers:\n%s", out)
	}

	// No private key material in anything the coordinator read or wrote.
	coordFiles, _ := filepath.Glob(filepath.Join(coord, "*"))
	if len(coordFiles) != 5 {
		t.Fatalf("coordinator files: %v", coordFiles)
	}
	for _, home := range homes {
		for _, secret := range secretsOf(t, home) {
			for _, f := range coordFiles {
				b, _ := os.ReadFile(f)
				if strings.Contains(string(b), secret) {
					t.Fatalf("%s holds private key material of %s", f, home)
				}
			}
		}
	}
	show := devMustRun(t, dir, nil, "ledger", "genesis", "show", genesis)
	if !strings.Contains(show, "sha256      "+hash[1]) || !strings.Contains(show, "committee   4 members, threshold 3") ||
		!strings.Contains(show, "regulators  1") || !strings.Contains(show, `"Org 2"`) {
		t.Fatalf("genesis show:\n%s", show)
	}
	for _, home := range homes {
		out := devMustRun(t, dir, nil, "ledger", "genesis", "install", "--home", home, "--genesis", genesis, "--peers", peers[1])
		if !strings.Contains(out, hash[1]) {
			t.Fatalf("install printed another hash:\n%s", out)
		}
	}
	c := ledgertest.RunHomes(t, homes, rpcs)
	c.WaitHeight(t, 3, 60*time.Second)

	rpc := rpcs[1]
	if out := devMustRun(t, dir, nil, "consortium", "list", "--rpc", rpc); !strings.Contains(out, "committee: 4 members, threshold 3; 1 regulators") ||
		!strings.Contains(out, "validators: 4") || strings.Count(out, "  power 10") != 4 {
		t.Fatalf("consortium list:\n%s", out)
	}
	key := func(i int) string { return filepath.Join(homes[i], "keys", "committee.pem") }

	// The proposal is signed offline: the --rpc given points nowhere.
	gwKey := filepath.Join(dir, "gw.pem")
	devMustRun(t, dir, nil, "keygen", "--out", gwKey)
	gwDID := strings.TrimSpace(devMustRun(t, dir, nil, "did", "--pub", filepath.Join(dir, "gw.pub.pem")))
	txFile := filepath.Join(dir, "proposal.json")
	out = devMustRun(t, dir, nil, "consortium", "propose", "add-gateway", "--pub", filepath.Join(dir, "gw.pub.pem"), "--site", "site-c",
		"--key", key(0), "--sign-only", "--out", txFile, "--deadline", "100000", "--rpc", "http://127.0.0.1:1")
	id := regexp.MustCompile(`proposal ([0-9a-f]{64})`).FindStringSubmatch(out)
	if id == nil {
		t.Fatalf("propose output lacks the ID:\n%s", out)
	}
	if out := devMustRun(t, dir, nil, "ledger", "submit", txFile, "--rpc", rpc); !strings.Contains(out, "result  committed (code 0)") {
		t.Fatalf("submit:\n%s", out)
	}
	isMember := func() bool {
		out := devMustRun(t, dir, nil, "gateway", "list", "--rpc", rpc)
		return strings.Contains(out, gwDID) && strings.Contains(out, "member")
	}
	devMustRun(t, dir, nil, "consortium", "approve", id[1], "--key", key(1), "--rpc", rpc)
	if isMember() {
		t.Fatal("two approvals of four (threshold 3) admitted the gateway")
	}
	out, _, code := devRun(t, dir, nil, "consortium", "approve", id[1], "--key", key(1), "--rpc", rpc)
	if code != 1 || !strings.Contains(out, "already_approved") {
		t.Fatalf("second approval by org 1: exit %d\n%s", code, out)
	}
	devMustRun(t, dir, nil, "consortium", "approve", id[1], "--key", key(2), "--rpc", rpc)
	if !isMember() {
		t.Fatal("the third approval did not admit the gateway")
	}
	out, _, code = devRun(t, dir, nil, "consortium", "approve", id[1], "--key", key(3), "--rpc", rpc)
	if code != 1 || !strings.Contains(out, "proposal_executed") {
		t.Fatalf("approval of an executed proposal: exit %d\n%s", code, out)
	}
	if out := devMustRun(t, dir, nil, "consortium", "show", id[1], "--rpc", rpc); !strings.Contains(out, `"status": "executed"`) {
		t.Fatalf("consortium show:\n%s", out)
	}
	if _, _, code := devRun(t, dir, nil, "consortium", "approve", "not-an-id", "--key", key(3), "--rpc", rpc); code != 2 {
		t.Fatalf("approve with a bad ID: exit %d, want 2", code)
	}
	if _, _, code := devRun(t, dir, nil, "consortium", "propose", "remove-gateway", "--did", gwDID, "--key", key(0), "--sign-only", "--out", txFile); code != 2 {
		t.Fatalf("--sign-only without --deadline: exit %d, want 2", code)
	}
}
