// Package audit checks a gateway's anchored history against the ledger:
// the chain of batch headers, the records every header covers (from the
// gateway's record API), their Merkle roots and each device's sequence
// numbers. Used by `edgeanchor audit` and the portal's Audit page.
package audit

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
	"github.com/edgeanchor/edgeanchor/internal/safetext"
)

// Options configure Run.
type Options struct {
	Gateway  device.DID
	Ledger   string // CometBFT RPC URL
	API      string // gateway HTTP API base URL
	From, To time.Time
	Out      io.Writer // report lines (nil: none)
	// Progress (if not nil) is called with the number of batches walked
	// and their total: first with 0, then after each batch.
	Progress func(done, total uint64)
}

// Finding is one thing the audit found wrong.
type Finding struct {
	Kind   string `json:"kind"` // missing_batch, chain, missing_records, record, root, sequence_gap, sequence_duplicate
	Detail string `json:"detail"`
}

// auditor carries the state of one audit.
type auditor struct {
	o        Options
	ledger   *ledgerclient.Client
	http     *http.Client
	gwPub    *ecdsa.PublicKey
	receipts *anchor.ReceiptChecker  // verifies each commit group's signature once
	line     map[device.DID]*lineKey // the gateway's key and its predecessors' (line.go)
	devices  map[device.DID]*ecdsa.PublicKey
	seqs     map[device.DID]*seqSet
	findings []Finding
	// archived: batches whose records the gateway moved to an archive
	// file (docs/operations.md, "Retention"), by archive name.
	archived map[string]*archivedBatches
}

// archivedBatches counts the batches of one archive the audit met.
type archivedBatches struct {
	info             httpapi.ArchiveInfo
	batches, records uint64
}

func (a *auditor) find(kind, format string, args ...any) {
	f := Finding{Kind: kind, Detail: fmt.Sprintf(format, args...)}
	a.findings = append(a.findings, f)
	fmt.Fprintln(a.o.Out, safetext.Sprintf("✗ %s: %s", f.Kind, f.Detail))
}

// Run runs the audit and returns its findings; an error means the audit
// could not run (ledger or gateway unreachable, bad answers).
func Run(ctx context.Context, o Options) ([]Finding, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	c, err := ledgerclient.NewClient(o.Ledger, ledgerclient.ClientOptions{})
	if err != nil {
		return nil, fmt.Errorf("audit: --ledger: %w", err)
	}
	defer c.Close()
	a := &auditor{o: o, ledger: c, http: &http.Client{Timeout: 60 * time.Second},
		devices: map[device.DID]*ecdsa.PublicKey{}, seqs: map[device.DID]*seqSet{}, archived: map[string]*archivedBatches{}}
	gr, err := c.Gateway(ctx, o.Gateway)
	if err != nil {
		return nil, fmt.Errorf("audit: gateway %s on the ledger: %w", o.Gateway, err)
	}
	if a.gwPub, err = device.ParsePublicKeyDER(gr.Pub); err != nil {
		return nil, fmt.Errorf("audit: gateway key: %w", err)
	}
	a.receipts = &anchor.ReceiptChecker{Pub: a.gwPub}
	if err := a.loadLine(ctx, gr); err != nil {
		return nil, err
	}
	var lastSeq uint64
	last, err := c.LastBatch(ctx, o.Gateway)
	switch {
	case errors.Is(err, ledgerclient.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("audit: last batch: %w", err)
	default:
		lastSeq = last.Seq
	}
	fmt.Fprintln(o.Out, safetext.Sprintf("audit of gateway %s (%s, site %s): %d batches on the ledger", o.Gateway, gr.Name, gr.Site, lastSeq))

	if o.Progress != nil {
		o.Progress(0, lastSeq)
	}
	prev, nextFirst := anchor.ZeroHash, uint64(1)
	var records, batches uint64
	for seq := uint64(1); seq <= lastSeq; seq++ {
		if o.Progress != nil && seq > 1 {
			o.Progress(seq-1, lastSeq)
		}
		br, err := c.Batch(ctx, o.Gateway, seq)
		if errors.Is(err, ledgerclient.ErrNotFound) {
			a.find("missing_batch", "batch %d is not on the ledger (the last is %d)", seq, lastSeq)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("audit: batch %d: %w", seq, err)
		}
		h, err := anchor.ParseHeader(br.Header)
		if err != nil {
			a.find("chain", "batch %d: header: %v", seq, err)
			continue
		}
		switch {
		case a.line[h.Gateway] == nil || h.Seq != seq:
			a.find("chain", "batch %d: header names gateway %s seq %d", seq, h.Gateway, h.Seq)
		case !device.VerifySignature(a.line[h.Gateway].pub, br.Header, br.Sig):
			a.find("chain", "batch %d: header signature does not verify under the gateway's key", seq)
		case h.Prev != prev:
			a.find("chain", "batch %d: prev %s, but batch %d hashes to %s", seq, h.Prev, seq-1, prev)
		case h.First != nextFirst:
			a.find("chain", "batch %d: first gseq %d, want %d", seq, h.First, nextFirst)
		}
		prev, nextFirst = h.Hash(), h.Last+1
		if (!o.From.IsZero() && h.To.Before(o.From)) || (!o.To.IsZero() && h.From.After(o.To)) {
			continue
		}
		batches++
		n, err := a.checkBatch(ctx, h)
		if err != nil {
			return nil, err
		}
		records += n
	}
	if o.Progress != nil {
		o.Progress(lastSeq, lastSeq)
	}
	a.checkSequences()
	a.reportArchived()
	fmt.Fprintf(o.Out, "checked %d batches, %d records, %d devices (%d receipt signatures)\n",
		batches, records, len(a.seqs), a.signaturesVerified())
	if len(a.findings) == 0 {
		fmt.Fprintln(o.Out, "✓ no findings")
	} else {
		fmt.Fprintf(o.Out, "%d finding(s)\n", len(a.findings))
	}
	return a.findings, nil
}

// checkBatch fetches the batch's records, checks each and recomputes the
// root. It returns the number of records checked.
func (a *auditor) checkBatch(ctx context.Context, h *anchor.BatchHeader) (uint64, error) {
	var leaves []anchor.Hash
	var got uint64
	want := h.First
	for from := h.First; from <= h.Last; from += httpapi.MaxRangeRecords {
		to := min(h.Last, from+httpapi.MaxRangeRecords-1)
		ans, err := a.fetch(ctx, from, to)
		if err != nil {
			return got, err
		}
		if arch := archiveOf(ans, h); arch != nil {
			a.noteArchived(arch, h)
			return 0, nil
		}
		for _, r := range ans.Records {
			if r.GSeq < want || r.GSeq > to {
				return got, fmt.Errorf("audit: gateway answered gseq %d for %d..%d", r.GSeq, from, to)
			}
			if r.GSeq > want {
				a.find("missing_records", "batch %d: gseq %d..%d missing from the gateway", h.Seq, want, r.GSeq-1)
			}
			want = r.GSeq + 1
			got++
			leaves = append(leaves, anchor.LeafHash(r.Salt, r.Receipt))
			a.checkRecord(ctx, h, &r)
		}
		if want <= to {
			a.find("missing_records", "batch %d: gseq %d..%d missing from the gateway", h.Seq, want, to)
			want = to + 1
		}
	}
	if got != h.Count {
		a.find("missing_records", "batch %d: the gateway serves %d of its %d records", h.Seq, got, h.Count)
		return got, nil
	}
	if root := anchor.MerkleRoot(leaves); root != h.Root {
		a.find("root", "batch %d: records hash to root %s, the ledger holds %s", h.Seq, root, h.Root)
	}
	return got, nil
}

// checkRecord checks one record's receipt and envelope and its device's
// sequence.
func (a *auditor) checkRecord(ctx context.Context, h *anchor.BatchHeader, r *httpapi.RangeRecord) {
	bad := func(format string, args ...any) {
		a.find("record", "batch %d gseq %d: %s", h.Seq, r.GSeq, fmt.Sprintf(format, args...))
	}
	rc, err := a.receiptChecker(r.Receipt).Verify(r.Receipt, r.Group, r.Path, r.ReceiptSig)
	if err != nil {
		bad("%v", err)
		return
	}
	if rc.GSeq != r.GSeq || a.line[rc.Gateway] == nil || rc.DID != r.DID || rc.Seq != r.Seq {
		bad("receipt is for gseq %d, %s seq %d", rc.GSeq, rc.DID, rc.Seq)
		return
	}
	if anchor.SM3(r.Envelope) != rc.Env {
		bad("envelope does not hash to the receipt's env")
		return
	}
	pub, err := a.deviceKey(ctx, r.DID)
	if err != nil {
		bad("device %s: %v", r.DID, err)
		return
	}
	o, err := device.Open(r.Envelope, 0)
	if err == nil {
		err = o.VerifySignature(pub)
	}
	if err != nil {
		bad("envelope: %v", err)
		return
	}
	if o.Body.DID != r.DID || o.Body.Seq != r.Seq {
		bad("envelope is %s seq %d", o.Body.DID, o.Body.Seq)
		return
	}
	set := a.seqs[r.DID]
	if set == nil {
		set = &seqSet{}
		a.seqs[r.DID] = set
	}
	if !set.add(r.Seq) {
		a.find("sequence_duplicate", "device %s: seq %d stored again (gseq %d)", r.DID, r.Seq, r.GSeq)
	}
}

// checkSequences reports, once every record is checked, the seqs missing
// from each device's set: below its lowest (from 1, unless --from) and
// between its runs. A late fill stored after later seqs (docs/protocol.md)
// is in the set, so the gap it filled is not reported.
func (a *auditor) checkSequences() {
	dids := make([]device.DID, 0, len(a.seqs))
	for did := range a.seqs {
		dids = append(dids, did)
	}
	slices.Sort(dids)
	for _, did := range dids {
		runs := a.seqs[did].runs
		if first := runs[0].from; first > 1 && a.o.From.IsZero() && len(a.archived) == 0 {
			a.find("sequence_gap", "device %s: lowest seq is %d (seqs 1..%d missing)", did, first, first-1)
		}
		for i := 1; i < len(runs); i++ {
			from, to := runs[i-1].to, runs[i].from
			a.find("sequence_gap", "device %s: seq jumps from %d to %d (%d missing)", did, from, to, to-from-1)
		}
	}
}

// seqSet is a set of device seqs as ascending, disjoint, non-adjacent
// runs: a device's seqs are mostly contiguous, so an audit of millions of
// records holds a few runs per device.
type seqSet struct{ runs []seqRun }

type seqRun struct{ from, to uint64 }

// add puts seq in the set; it returns false when seq was already there.
func (s *seqSet) add(seq uint64) bool {
	// i: the first run that ends at seq-1 or later.
	// (Written without seq±1 overflowing: seqs come from the gateway.)
	i := sort.Search(len(s.runs), func(i int) bool { return s.runs[i].to >= seq || s.runs[i].to == seq-1 && seq > 0 })
	switch {
	case i < len(s.runs) && s.runs[i].from <= seq && seq <= s.runs[i].to:
		return false
	case i < len(s.runs) && seq > 0 && s.runs[i].to == seq-1:
		s.runs[i].to = seq
		if i+1 < len(s.runs) && seq < math.MaxUint64 && s.runs[i+1].from == seq+1 {
			s.runs[i].to = s.runs[i+1].to
			s.runs = slices.Delete(s.runs, i+1, i+2)
		}
	case i < len(s.runs) && seq < math.MaxUint64 && s.runs[i].from == seq+1:
		s.runs[i].from = seq
	default:
		s.runs = slices.Insert(s.runs, i, seqRun{seq, seq})
	}
	return true
}

func (a *auditor) deviceKey(ctx context.Context, did device.DID) (*ecdsa.PublicKey, error) {
	if k, ok := a.devices[did]; ok {
		return k, nil
	}
	d, err := a.ledger.Device(ctx, did)
	if err != nil {
		return nil, err
	}
	pub, err := device.ParsePublicKeyDER(d.Pub)
	if err != nil {
		return nil, err
	}
	a.devices[did] = pub
	return pub, nil
}

func (a *auditor) fetch(ctx context.Context, from, to uint64) (*httpapi.RangeAnswer, error) {
	u := strings.TrimRight(a.o.API, "/") + "/v1/records?" + url.Values{
		"from_gseq": {fmt.Sprint(from)}, "to_gseq": {fmt.Sprint(to)},
	}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("audit: gateway API: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("audit: gateway API %s: %s %s", u, resp.Status, strings.TrimSpace(string(b)))
	}
	var ans httpapi.RangeAnswer
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<30)).Decode(&ans); err != nil {
		return nil, fmt.Errorf("audit: gateway API answer: %w", err)
	}
	return &ans, nil
}

// archiveOf returns the archive the gateway names for all of h's records,
// or nil: an archive holds whole batches.
func archiveOf(ans *httpapi.RangeAnswer, h *anchor.BatchHeader) *httpapi.ArchiveInfo {
	for i := range ans.Archives {
		if ar := &ans.Archives[i]; ar.FirstGSeq <= h.First && h.Last <= ar.LastGSeq {
			return ar
		}
	}
	return nil
}

func (a *auditor) noteArchived(ar *httpapi.ArchiveInfo, h *anchor.BatchHeader) {
	n, ok := a.archived[ar.Name]
	if !ok {
		n = &archivedBatches{info: *ar}
		a.archived[ar.Name] = n
	}
	n.batches++
	n.records += h.Count
}

// reportArchived says which batches the gateway moved to archive files:
// their headers were checked on the ledger, their records are checked
// from the archive (edgeanchor archive verify); seqs below a device's
// lowest one still stored are in the archives, not reported as gaps.
func (a *auditor) reportArchived() {
	names := make([]string, 0, len(a.archived))
	for name := range a.archived {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		n := a.archived[name]
		fmt.Fprintln(a.o.Out, safetext.Sprintf("archived: %d batches (%d records, gseq %d..%d) are in archive %s, not served by the gateway; check it with edgeanchor archive verify",
			n.batches, n.records, n.info.FirstGSeq, n.info.LastGSeq, name))
	}
}
