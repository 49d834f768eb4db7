package wages

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/device"
)

// Errors of the gateway API client.
var (
	// ErrNotFound means the gateway has no such batch or record.
	ErrNotFound = errors.New("wages: not found at the gateway")
	// ErrNotAnchored means the gateway holds the record but its batch is
	// not committed on the ledger yet.
	ErrNotAnchored = errors.New("wages: batch not anchored yet")
	// ErrArchived means the gateway moved the batch or record to an
	// archive file (410; the error carries the gateway's answer, which
	// names the file): a period that old is reported from the archive.
	ErrArchived = errors.New("wages: archived by the gateway")
)

// maxRange is the most records one GET /v1/records answers
// (docs/internals.md).
const maxRange = 10_000

// Gateway reads a gateway's HTTP API (docs/internals.md, "Batches, outbox
// and proofs"). Nothing it returns is trusted: the report verifies every
// byte it uses.
type Gateway struct {
	API  string       // base URL, http://host:8480
	HTTP *http.Client // nil: a client with a 60 s timeout
}

// wireBatch is the part of GET /v1/batches/{seq} the report reads.
type wireBatch struct {
	Seq    uint64 `json:"seq"`
	First  uint64 `json:"first"`
	Last   uint64 `json:"last"`
	Header []byte `json:"header"`
}

// wireRecord is one record of GET /v1/records.
type wireRecord struct {
	GSeq       uint64          `json:"gseq"`
	DID        device.DID      `json:"did"`
	Seq        uint64          `json:"seq"`
	Kind       string          `json:"kind"`
	Salt       anchor.HexBytes `json:"salt"`
	Receipt    []byte          `json:"receipt"`
	Group      []byte          `json:"group,omitempty"`
	Path       []anchor.Hash   `json:"path,omitempty"`
	ReceiptSig []byte          `json:"receipt_sig"`
	Envelope   []byte          `json:"env"`
}

type wireRange struct {
	Records  []wireRecord `json:"records"`
	LastGSeq uint64       `json:"last_gseq"`
}

func (g *Gateway) client() *http.Client {
	if g.HTTP != nil {
		return g.HTTP
	}
	return &http.Client{Timeout: 60 * time.Second}
}

// get fetches path and returns the body of a 200 answer (at most limit
// bytes); 404 is ErrNotFound and 409 ErrNotAnchored.
func (g *Gateway) get(ctx context.Context, path string, limit int64) ([]byte, error) {
	u := strings.TrimRight(g.API, "/") + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("wages: gateway API: %w", err)
	}
	resp, err := g.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("wages: gateway API: %w", err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, fmt.Errorf("%w: %s", ErrNotFound, path)
	case http.StatusConflict:
		return nil, fmt.Errorf("%w: %s", ErrNotAnchored, path)
	case http.StatusGone:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 2048))
		return nil, fmt.Errorf("%w: %s: %q", ErrArchived, path, strings.TrimSpace(string(b)))
	default:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("wages: gateway API %s: %s %q", path, resp.Status, strings.TrimSpace(string(b)))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("wages: gateway API %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("wages: gateway API %s: answer over %d bytes", path, limit)
	}
	return b, nil
}

func (g *Gateway) batch(ctx context.Context, seq uint64) (*wireBatch, error) {
	b, err := g.get(ctx, fmt.Sprintf("/v1/batches/%d", seq), 1<<20)
	if err != nil {
		return nil, err
	}
	var wb wireBatch
	if err := json.Unmarshal(b, &wb); err != nil {
		return nil, fmt.Errorf("wages: batch %d: %w", seq, err)
	}
	if wb.Seq != seq || wb.First == 0 || wb.Last < wb.First {
		return nil, fmt.Errorf("wages: batch %d: the gateway answered batch %d of gseq %d..%d", seq, wb.Seq, wb.First, wb.Last)
	}
	return &wb, nil
}

func (g *Gateway) records(ctx context.Context, from, to uint64) ([]wireRecord, error) {
	q := url.Values{"from_gseq": {fmt.Sprint(from)}, "to_gseq": {fmt.Sprint(to)}}
	b, err := g.get(ctx, "/v1/records?"+q.Encode(), 1<<30)
	if err != nil {
		return nil, err
	}
	var ans wireRange
	if err := json.Unmarshal(b, &ans); err != nil {
		return nil, fmt.Errorf("wages: records %d..%d: %w", from, to, err)
	}
	return ans.Records, nil
}

func (g *Gateway) bundle(ctx context.Context, gseq uint64) (*evidence.Bundle, error) {
	b, err := g.get(ctx, fmt.Sprintf("/v1/records/%d/proof", gseq), evidence.MaxBundleBytes)
	if err != nil {
		return nil, err
	}
	return evidence.ParseBundle(b)
}

func (g *Gateway) deviceBundle(ctx context.Context, did device.DID, seq uint64) (*evidence.Bundle, error) {
	b, err := g.get(ctx, fmt.Sprintf("/v1/devices/%s/records/%d/proof", url.PathEscape(string(did)), seq), evidence.MaxBundleBytes)
	if err != nil {
		return nil, err
	}
	return evidence.ParseBundle(b)
}
