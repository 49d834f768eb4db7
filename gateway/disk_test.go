package gateway

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/refusal"
	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
	"github.com/edgeanchor/edgeanchor/gateway/store/diskfloor"
	tu "github.com/edgeanchor/edgeanchor/internal/testutil"
)

// A free-space floor above the disk's free space stands for a full disk:
// the store refuses writes before any is attempted (disk_full, MQTT 5 code
// 0x97, nothing stored, no gseq used), /readyz is 503 naming the store
// and the floor, and ingest resumes once there is room again (here: the
// floor is lowered, as freeing space would), without a restart; the
// refused reading is then stored once, gseq stays gapless.
func TestDiskFloorRefusesAndResumes(t *testing.T) {
	t.Parallel()
	e := itStart(t, itConfig(t), nil, nil)
	st := e.g.Store()
	d := e.newDevice("env")
	c, _, receipts, err := e.v5(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	env1 := d.envelope(t, 1)
	if code, err := publish5(c, d, "", env1); code != 0 || err != nil {
		t.Fatalf("publish 1: %#x %v", code, err)
	}
	e.checkReceipt(waitMsg(t, receipts), d, 1, env1)

	free := diskfloor.Free(filepath.Join(e.cfg.DataDir, "records"))
	st.SetMinFree(free + 1<<30)
	env2 := d.envelope(t, 2)
	if code, _ := publish5(c, d, "", env2); code != 0x97 {
		t.Fatalf("publish below the floor: code %#x, want 0x97", code)
	}
	if got := testutil.ToFloat64(e.g.Broker().Metrics().Refused.WithLabelValues(refusal.DiskFull, device.KindDust)); got != 1 {
		t.Fatalf("refused{disk_full} = %v", got)
	}
	if got := st.LastGSeq(); got != 1 {
		t.Fatalf("LastGSeq = %d below the floor, want 1", got)
	}
	assertMetric(t, e, "edgeanchor_store_disk_low", 1)
	tu.WaitUntil(t, 10*time.Second, "/readyz to say the store is below its floor", func() bool {
		code, body, _ := readyz(t, e.g.HTTPAddr())
		return code == http.StatusServiceUnavailable && body["status"] == httpapi.StatusNotReady &&
			strings.Contains(body["store"], "store.min_free_mb")
	})

	st.SetMinFree(256 << 20) // space freed
	assertMetric(t, e, "edgeanchor_store_disk_low", 0)
	if code, err := publish5(c, d, "", env2); code != 0 || err != nil {
		t.Fatalf("the refused reading sent again after space was freed: %#x %v", code, err)
	}
	e.checkReceipt(waitMsg(t, receipts), d, 2, env2)
	if code, err := publish5(c, d, "", d.envelope(t, 3)); code != 0 || err != nil {
		t.Fatalf("publish 3: %#x %v", code, err)
	}
	recs, err := st.DeviceRecords(d.did, 1, 100, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || st.LastGSeq() != 3 {
		t.Fatalf("%d records, LastGSeq %d; want 3 and 3", len(recs), st.LastGSeq())
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) || r.GSeq != uint64(i+1) || r.Gap != 0 {
			t.Fatalf("record %d: seq %d gseq %d gap %d", i, r.Seq, r.GSeq, r.Gap)
		}
	}
	tu.WaitUntil(t, 10*time.Second, "/readyz to be ready again", func() bool {
		code, body, _ := readyz(t, e.g.HTTPAddr())
		return code == http.StatusOK && body["store"] == "ok"
	})
}

// Started on a disk already below the floor, the gateway never says it
// is ready and refuses the first write (it used to say 200 and take
// writes until Badger died).
func TestDiskFloorAtStart(t *testing.T) {
	t.Parallel()
	cfg := itConfig(t)
	cfg.Store.MinFreeMB = 1 << 24 // 16 TiB: above any test machine's free space
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e := itStart(t, cfg, nil, nil)
	code, body, _ := readyz(t, e.g.HTTPAddr())
	if code != http.StatusServiceUnavailable || !strings.Contains(body["store"], "below its free-space floor") {
		t.Fatalf("/readyz at start on a full disk: %d %v", code, body)
	}
	d := e.newDevice("env")
	c, _, _, err := e.v5(d, d.credential(t))
	if err != nil {
		t.Fatal(err)
	}
	if code, _ := publish5(c, d, "", d.envelope(t, 1)); code != 0x97 {
		t.Fatalf("publish on a full disk: code %#x, want 0x97", code)
	}
	if got := e.g.Store().LastGSeq(); got != 0 {
		t.Fatalf("LastGSeq = %d, want 0", got)
	}
}

func assertMetric(t *testing.T, e *itEnv, name string, want float64) {
	t.Helper()
	mfs, err := e.prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.Metric) == 1 {
			if got := mf.Metric[0].GetGauge().GetValue(); got != want {
				t.Fatalf("%s = %v, want %v", name, got, want)
			}
			return
		}
	}
	t.Fatalf("metric %s not exported", name)
}
