package ledger

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMemberHomesAndGenesis: member homes made apart, genesis assembled from
// their member files, installed with the peers less the home's own node;
// bad member files and assemblies are refused naming what is wrong.
func TestMemberHomesAndGenesis(t *testing.T) {
	dir := t.TempDir()
	var ms []*MemberFile
	var paths []string
	for i, org := range []string{"Org A", "Org B", "Org C"} {
		home := filepath.Join(dir, org)
		_, m, err := InitMember(home, MemberOptions{Org: org, P2PPort: 30000 + i, RPCPort: 31000 + i, NoPrometheus: true, Regulator: i == 0})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(home, MemberFileName)
		got, err := ReadMemberFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if got.Org != org || len(got.RegulatorKeys) != map[bool]int{true: 1, false: 0}[i == 0] || got.Peer() != m.NodeID+"@127.0.0.1:"+itoa(30000+i) {
			t.Fatalf("member file %+v", got)
		}
		ms, paths = append(ms, got), append(paths, p)
		if fi, err := os.Stat(filepath.Join(home, CommitteeKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("committee key: %v %v", fi, err)
		}
		if _, _, err := InitMember(home, MemberOptions{Org: org}); !errors.Is(err, ErrHomeExists) {
			t.Fatalf("second InitMember: %v", err)
		}
	}
	if _, err := StartNode(t.Context(), filepath.Join(dir, "Org A"), NodeOptions{}); !errors.Is(err, ErrNoGenesis) {
		t.Fatalf("StartNode without genesis: %v", err)
	}
	gen, peers, err := AssembleGenesis(ms, "c-1", 2, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(gen.Validators) != 3 || gen.Validators[1].Name != "Org B" || strings.Count(peers, "@") != 3 {
		t.Fatalf("genesis %+v, peers %s", gen.Validators, peers)
	}
	gpath := filepath.Join(dir, "genesis.json")
	if err := gen.SaveAs(gpath); err != nil {
		t.Fatal(err)
	}
	if _, err := InstallGenesis(filepath.Join(dir, "Org B"), gpath, peers); err != nil {
		t.Fatal(err)
	}
	conf, err := LoadConfig(filepath.Join(dir, "Org B"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(conf.P2P.PersistentPeers, "@") != 2 || strings.Contains(conf.P2P.PersistentPeers, ms[1].NodeID) {
		t.Fatalf("persistent peers of Org B: %q", conf.P2P.PersistentPeers)
	}

	for name, k := range map[string]int{"threshold 0": 0, "threshold above N": 4} {
		if _, _, err := AssembleGenesis(ms, "c-1", k, nil, time.Now()); err == nil || !strings.Contains(err.Error(), "threshold") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, _, err := AssembleGenesis([]*MemberFile{ms[0], ms[0]}, "c-1", 1, nil, time.Now()); err == nil || !strings.Contains(err.Error(), "two member files") {
		t.Errorf("duplicate member: %v", err)
	}

	var raw map[string]any
	b, _ := os.ReadFile(paths[0])
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	bad := map[string]func(m map[string]any){
		"version":        func(m map[string]any) { m["version"] = 2 },
		"unknown member": func(m map[string]any) { m["priv_key"] = "x" },
		"pub_key short":  func(m map[string]any) { m["validator"] = map[string]any{"pub_key": "AAAA", "power": 10} },
		"power zero": func(m map[string]any) {
			v := m["validator"].(map[string]any)
			m["validator"] = map[string]any{"pub_key": v["pub_key"], "power": 0}
		},
		"node_id":       func(m map[string]any) { m["node_id"] = "xyz" },
		"p2p_address":   func(m map[string]any) { m["p2p_address"] = "nohost" },
		"committee_key": func(m map[string]any) { m["committee_key"] = "AAAA" },
		"org":           func(m map[string]any) { m["org"] = "a\nb" },
	}
	for name, f := range bad {
		m := map[string]any{}
		for k, v := range raw {
			m[k] = v
		}
		f(m)
		b, _ := json.Marshal(m)
		p := filepath.Join(dir, "bad.json")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadMemberFile(p); err == nil || !strings.Contains(err.Error(), strings.Fields(name)[0]) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }
