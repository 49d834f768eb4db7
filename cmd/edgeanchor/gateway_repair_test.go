package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/batch"
	"github.com/edgeanchor/edgeanchor/gateway/store"
)

// `gateway repair` on a store whose newest value log lost its last 100
// bytes after a clean stop: it refuses while the store is open, then
// keeps records 1..49, names gseq 50 as lost, keeps a copy of the damaged
// store, and the repaired store opens again.
func TestGatewayRepairCommand(t *testing.T) {
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "data", "records")
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	gw := device.NewKeySigner(priv)
	st, err := store.Open(storeDir, store.Options{Signer: gw, Claims: batch.Claims()})
	if err != nil {
		t.Fatal(err)
	}
	did := device.DID("did:ea:0000000000000000000000000000000a")
	for seq := uint64(1); seq <= 50; seq++ {
		env := []byte(fmt.Sprintf(`{"v":1,"did":%q,"seq":%d,"pad":"%s"}`, did, seq, strings.Repeat("x", 600)))
		if _, err := st.Append(context.Background(), store.Pending{DID: did, Seq: seq, Kind: device.KindDust, Envelope: env}); err != nil {
			t.Fatal(err)
		}
	}
	if _, errOut, code := devRun(t, dir, nil, "gateway", "repair", "--data-dir", "data"); code != 1 || !strings.Contains(errOut, "in use") {
		t.Fatalf("repair of an open store: exit %d, %s", code, errOut)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	vlogs, _ := filepath.Glob(filepath.Join(storeDir, "*.vlog"))
	sort.Strings(vlogs)
	var victim string
	for _, p := range vlogs {
		if fi, err := os.Stat(p); err == nil && fi.Size() > 20 {
			victim = p
		}
	}
	fi, err := os.Stat(victim)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(victim, fi.Size()-100); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Open(storeDir, store.Options{Signer: gw, Claims: batch.Claims()}); err == nil || !strings.Contains(err.Error(), "record store damaged") {
		t.Fatalf("damaged store opened: %v", err)
	}

	out := devMustRun(t, dir, nil, "gateway", "repair", "--data-dir", "data")
	t.Logf("repair output:\n%s", out)
	for _, want := range []string{"records kept: 49", "lost gseqs: 50 (1 records)", "damaged copy kept in data/records.damaged-"} {
		if !strings.Contains(out, want) {
			t.Fatalf("repair output lacks %q:\n%s", want, out)
		}
	}
	if copies, _ := filepath.Glob(storeDir + ".damaged-*"); len(copies) != 1 {
		t.Fatalf("copies of the damaged store: %v", copies)
	}
	st, err = store.Open(storeDir, store.Options{Signer: gw, Claims: batch.Claims()})
	if err != nil {
		t.Fatalf("repaired store: %v", err)
	}
	defer st.Close()
	if got := st.LastGSeq(); got != 49 {
		t.Fatalf("LastGSeq after repair = %d, want 49", got)
	}
	if last, err := st.LastSeq(did); err != nil || last != 49 {
		t.Fatalf("device's last seq after repair = %d %v, want 49 (so that it can resend 50)", last, err)
	}
}

// A table file cut by 100 bytes after a clean stop: `edgeanchor gateway`
// used to die in a Badger panic (exit 2); it now exits 1 naming the file,
// and `gateway repair` gets every record back from the value log.
func TestGatewayDamagedTable(t *testing.T) {
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "data", "records")
	priv, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := device.WritePrivateKeyFile(filepath.Join(dir, "gateway.key"), priv); err != nil {
		t.Fatal(err)
	}
	gw := device.NewKeySigner(priv)
	st, err := store.Open(storeDir, store.Options{Signer: gw, Claims: batch.Claims()})
	if err != nil {
		t.Fatal(err)
	}
	did := device.DID("did:ea:0000000000000000000000000000000a")
	for seq := uint64(1); seq <= 50; seq++ {
		env := []byte(fmt.Sprintf(`{"v":1,"did":%q,"seq":%d,"pad":"%s"}`, did, seq, strings.Repeat("x", 600)))
		if _, err := st.Append(context.Background(), store.Pending{DID: did, Seq: seq, Kind: device.KindDust, Envelope: env}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	tables, _ := filepath.Glob(filepath.Join(storeDir, "*.sst"))
	if len(tables) == 0 {
		t.Fatal("no table file after a clean stop")
	}
	sort.Strings(tables)
	victim := tables[len(tables)-1]
	fi, err := os.Stat(victim)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(victim, fi.Size()-100); err != nil {
		t.Fatal(err)
	}

	_, errOut, code := devRun(t, dir, nil, "gateway", "--data-dir", "data", "--key", "gateway.key",
		"--mqtt-tcp", "127.0.0.1:0", "--mqtt-ws", "", "--http", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errOut, "record store damaged") || !strings.Contains(errOut, filepath.Base(victim)) ||
		strings.Contains(errOut, "panic") || strings.Contains(errOut, "goroutine ") {
		t.Fatalf("gateway on a cut table: exit %d, stderr:\n%s", code, errOut)
	}

	out := devMustRun(t, dir, nil, "gateway", "repair", "--data-dir", "data")
	t.Logf("repair output:\n%s", out)
	for _, want := range []string{"unreadable table files dropped: ", filepath.Base(victim), "records kept: 50 (50 read back from the value logs)", "lost gseqs: none"} {
		if !strings.Contains(out, want) {
			t.Fatalf("repair output lacks %q:\n%s", want, out)
		}
	}
	st, err = store.Open(storeDir, store.Options{Signer: gw, Claims: batch.Claims()})
	if err != nil {
		t.Fatalf("repaired store: %v", err)
	}
	defer st.Close()
	recs, err := st.DeviceRecords(did, 1, 100, 100)
	if err != nil || len(recs) != 50 {
		t.Fatalf("device records after the repair: %d, %v", len(recs), err)
	}
	if last, err := st.LastSeq(did); err != nil || last != 50 {
		t.Fatalf("last seq after the repair = %d %v, want 50", last, err)
	}
}
