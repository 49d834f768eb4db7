package gateway

import (
	"fmt"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/internal/testutil"
)

// TestIngestRetryableRefusalLateFill reproduces a retryable refusal inside
// an in-flight window over MQTT 5 against a real gateway: seq 2 is refused
// as rate_limited, seq 3 is stored after it (a gap of 1), and seq 2 sent
// again is stored as a late fill instead of being refused as replay.
func TestIngestRetryableRefusalLateFill(t *testing.T) {
	cfg := itConfig(t)
	cfg.Limits.DeviceRate = 1.0 / 3 // one token every 3 s
	cfg.Limits.DeviceBurst = 1
	e := itStart(t, cfg, nil, nil)
	d := e.newDevice("env")
	c, _, _, err := e.v5(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	envs := map[uint64][]byte{}
	for seq := uint64(1); seq <= 3; seq++ {
		envs[seq] = d.envelope(t, seq)
	}
	if code, err := publish5(c, d, "", envs[1]); code != 0 || err != nil {
		t.Fatalf("seq 1: %#x %v", code, err)
	}
	if code, _ := publish5(c, d, "", envs[2]); code != 0x97 {
		t.Fatalf("seq 2 right after seq 1: code %#x, want 0x97 (rate_limited)", code)
	}
	// The device moves on with the rest of its window, retrying each
	// publish refused for the rate, as a device keeping its spool does.
	sendUntilStored := func(seq uint64) {
		t.Helper()
		testutil.WaitFor(t, 30*time.Second, fmt.Sprintf("seq %d stored", seq), func() error {
			code, err := publish5(c, d, "", envs[seq])
			if code == 0 && err == nil {
				return nil
			}
			if code != 0x97 {
				t.Fatalf("seq %d: code %#x %v, want 0 or 0x97", seq, code, err)
			}
			return fmt.Errorf("code %#x", code)
		})
	}
	sendUntilStored(3)
	sendUntilStored(2)
	recs, err := e.g.Store().DeviceRecords(d.did, 1, 10, 10)
	if err != nil || len(recs) != 3 {
		t.Fatalf("stored %d records, %v", len(recs), err)
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("record %d has seq %d", i, r.Seq)
		}
	}
	if recs[1].GSeq != 3 || recs[2].GSeq != 2 || recs[2].Gap != 1 || recs[1].Gap != 0 {
		t.Fatalf("seq 2 gseq %d gap %d, seq 3 gseq %d gap %d; want 3/0 and 2/1", recs[1].GSeq, recs[1].Gap, recs[2].GSeq, recs[2].Gap)
	}
	if got := gatherValue(t, e.prom, "edgeanchor_sequence_fills_total"); got != 1 {
		t.Fatalf("sequence_fills_total = %v, want 1", got)
	}
	// seq 2 once more: a resend, acknowledged; re-signed: a replay. The
	// broker counts an acknowledged publish just after it writes the
	// PUBACK: wait for the count, then check it is exactly one.
	sendUntilStored(2)
	testutil.WaitUntil(t, 10*time.Second, "the resend counted", func() bool {
		return gatherValue(t, e.prom, "edgeanchor_messages_duplicate_total") >= 1
	})
	if got := gatherValue(t, e.prom, "edgeanchor_messages_duplicate_total"); got != 1 {
		t.Fatalf("messages_duplicate_total = %v, want 1", got)
	}
	testutil.WaitFor(t, 30*time.Second, "a re-signed seq 2 refused as replay", func() error {
		code, err := publish5(c, d, "", d.envelope(t, 2))
		if code == 0x83 {
			return nil
		}
		if code != 0x97 {
			t.Fatalf("re-signed seq 2: code %#x %v, want 0x83 (replay)", code, err)
		}
		return fmt.Errorf("code %#x", code)
	})
}
