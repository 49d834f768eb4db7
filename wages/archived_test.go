package wages

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
)

// A gateway that archived its batches 1..2 (docs/operations.md,
// "Retention") answers 410 for them: the report's search for the newest
// batch and for the period's first batch steps over them, and asking for
// an archived batch itself says it is archived.
func TestArchivedBatchesAreSkipped(t *testing.T) {
	base := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	header := func(seq uint64) []byte {
		return (&anchor.BatchHeader{Gateway: device.DID("did:ea:0000000000000000000000000000000a"), Seq: seq,
			Prev: anchor.SM3([]byte{byte(seq)}), Root: anchor.SM3([]byte{1}), First: seq, Last: seq, Count: 1, From: base.Add(time.Duration(seq) * time.Hour), To: base.Add(time.Duration(seq) * time.Hour)}).Encode()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/batches/{seq}", func(w http.ResponseWriter, r *http.Request) {
		seq, _ := strconv.ParseUint(r.PathValue("seq"), 10, 64)
		switch {
		case seq >= 1 && seq <= 2:
			w.WriteHeader(http.StatusGone)
			_, _ = w.Write([]byte(`{"error":"batch archived","archive":{"name":"site-a-2026-09.ea"}}`))
		case seq >= 3 && seq <= 5:
			_ = json.NewEncoder(w).Encode(wireBatch{Seq: seq, First: seq, Last: seq, Header: header(seq)})
		default:
			http.NotFound(w, r)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	c := &collector{gw: &Gateway{API: srv.URL}}
	ctx := context.Background()
	last, err := c.lastBatch(ctx)
	if err != nil || last != 5 {
		t.Fatalf("last batch: %d %v, want 5", last, err)
	}
	first, err := c.firstFrom(ctx, base.Add(4*time.Hour), last)
	if err != nil || first != 4 {
		t.Fatalf("first batch from hour 4: %d %v, want 4", first, err)
	}
	first, err = c.firstFrom(ctx, base, last)
	if err != nil || first != 3 {
		t.Fatalf("first batch from the start: %d %v, want 3 (the first kept)", first, err)
	}
	if _, err := c.gw.batch(ctx, 1); !errors.Is(err, ErrArchived) {
		t.Fatalf("an archived batch: %v, want ErrArchived", err)
	}
}
