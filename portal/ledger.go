package portal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	rpchttp "github.com/cometbft/cometbft/rpc/client/http"
	"github.com/cometbft/cometbft/types"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/anchor/evidence"
	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/gateway/httpapi"
)

// signedWindow is how many recent blocks the Consortium page looks at for
// each validator's last signature.
const signedWindow = 10

type validatorView struct {
	Name, Address string
	Power         int64
	LastSigned    int64
	Up            bool
}

type memberView struct {
	DID, Name, Site, Status string
	Admitted                int64
	Batches                 uint64
	LastHeight              int64
	LastTime                time.Time
	Lag                     string
}

type blockView struct {
	Height int64
	Time   time.Time
	Txs    int
}

type proposalView struct {
	ID, Kind, Status, Proposer string
	Height, Deadline           int64
	Approvals                  int
}

type consortiumView struct {
	ChainID    string
	Height     int64
	Time       time.Time
	Validators []validatorView
	Members    []memberView
	Blocks     []blockView
	Proposals  []proposalView
	Trusted    bool
}

// rpc is the CometBFT RPC client for what ledgerclient.Client does not ask
// (commits, block metas, headers); made once, in New.
func (s *Server) rpc() (*rpchttp.HTTP, error) { return s.cometRPC, s.cometErr }

func (s *Server) consortiumPage(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	p := page{Title: "Consortium", Nav: "consortium", Refresh: int(s.cfg.Refresh / time.Second)}
	v, err := s.consortium(ctx)
	if err != nil {
		p.Err = "The ledger did not answer: " + err.Error()
	}
	p.Data = v
	s.render(w, r, "consortium", p)
}

func (s *Server) consortium(ctx context.Context) (*consortiumView, error) {
	v := &consortiumView{}
	st, err := s.ledger.Status(ctx)
	if err != nil {
		return v, err
	}
	v.ChainID, v.Height, v.Time = st.ChainID, st.Height, st.Time
	v.Trusted = st.ChainID == s.trust.ChainID
	cli, err := s.rpc()
	if err != nil {
		return v, err
	}
	// Who signed the last few blocks.
	signed := map[string]int64{}
	for h := st.Height; h > 0 && h > st.Height-signedWindow; h-- {
		hh := h
		c, err := cli.Commit(ctx, &hh)
		if err != nil {
			return v, fmt.Errorf("commit %d: %w", h, err)
		}
		for _, sig := range c.Commit.Signatures {
			if sig.BlockIDFlag == types.BlockIDFlagCommit {
				a := sig.ValidatorAddress.String()
				signed[a] = max(signed[a], h)
			}
		}
	}
	vals, err := s.ledger.Validators(ctx)
	if err != nil {
		return v, err
	}
	for _, val := range vals {
		last := signed[val.Address]
		v.Validators = append(v.Validators, validatorView{Name: val.Name, Address: val.Address, Power: val.Power, LastSigned: last, Up: last > 0})
	}
	gws, err := s.ledger.Gateways(ctx)
	if err != nil {
		return v, err
	}
	for _, g := range gws {
		m := memberView{DID: string(g.DID), Name: g.Name, Site: g.Site, Status: g.Status, Admitted: g.Height, Batches: g.LastSeq}
		if g.LastSeq > 0 {
			if b, err := s.ledger.Batch(ctx, g.DID, g.LastSeq); err == nil {
				m.LastHeight = b.Height
				if t, ok := anchoredBy(ctx, cli, b.Height); ok {
					m.LastTime = t
					if h, err := anchor.ParseHeader(b.Header); err == nil {
						m.Lag = t.Sub(h.To).Round(time.Millisecond).String()
					}
				}
			}
		}
		v.Members = append(v.Members, m)
	}
	lo := max(1, st.Height-9)
	bi, err := cli.BlockchainInfo(ctx, lo, st.Height)
	if err != nil {
		return v, err
	}
	for _, m := range bi.BlockMetas {
		v.Blocks = append(v.Blocks, blockView{Height: m.Header.Height, Time: m.Header.Time, Txs: m.NumTxs})
	}
	props, err := s.ledger.Proposals(ctx)
	if err != nil {
		return v, err
	}
	for _, p := range props {
		v.Proposals = append(v.Proposals, proposalView{ID: p.ID.String(), Kind: p.Kind, Status: p.Status, Proposer: string(p.Proposer),
			Height: p.Height, Deadline: p.Deadline, Approvals: len(p.Approvals)})
	}
	return v, nil
}

type headerView struct {
	Seq          uint64
	From, To     time.Time
	First, Last  uint64
	Count        uint64
	Root, Hash   string
	Height       int64
	SigOK        bool
	PrevOK       bool
	PrevChecked  bool
	Problem      string
	HasRecordAPI bool
}

type gatewayView struct {
	DID, Name, Site string
	Last            uint64
	Headers         []headerView
	Newer, Older    uint64 // "before" of the neighbouring pages (0: none)
	API             bool
}

func (s *Server) gatewayParam(r *http.Request) (device.DID, error) {
	did, err := device.ParseDID(r.URL.Query().Get("did"))
	if err != nil {
		return "", fmt.Errorf("gateway: %w", err)
	}
	return did, nil
}

// gatewayPage shows one page of the gateway's header chain, newest first:
// the headers before seq "before" (the last one when absent). Each header
// is fetched by seq from the ledger, so the page costs the same for 10
// batches as for 100,000.
func (s *Server) gatewayPage(w http.ResponseWriter, r *http.Request) {
	p := page{Title: "Gateway", Nav: "consortium"}
	did, err := s.gatewayParam(r)
	if err != nil {
		p.Err = err.Error()
		w.WriteHeader(http.StatusBadRequest)
		s.render(w, r, "gateway", p)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	v, err := s.gatewayChain(ctx, did, r.URL.Query().Get("before"))
	if err != nil {
		p.Err = err.Error()
	}
	p.Data = v
	s.render(w, r, "gateway", p)
}

func (s *Server) gatewayChain(ctx context.Context, did device.DID, before string) (*gatewayView, error) {
	_, hasAPI := s.gateways[did]
	v := &gatewayView{DID: string(did), API: hasAPI}
	gr, err := s.ledger.Gateway(ctx, did)
	if err != nil {
		return v, fmt.Errorf("gateway %s on the ledger: %w", did, err)
	}
	v.Name, v.Site = gr.Name, gr.Site
	pub, err := device.ParsePublicKeyDER(gr.Pub)
	if err != nil {
		return v, fmt.Errorf("gateway key on the ledger: %w", err)
	}
	last, err := s.ledger.LastBatch(ctx, did)
	switch {
	case errors.Is(err, ledgerclient.ErrNotFound):
		return v, nil
	case err != nil:
		return v, fmt.Errorf("last batch: %w", err)
	}
	v.Last = last.Seq
	top := last.Seq
	if before != "" {
		b, err := strconv.ParseUint(before, 10, 64)
		if err != nil || b < 2 {
			return v, fmt.Errorf("before %q: want a batch seq of 2 or more", before)
		}
		top = min(top, b-1)
	}
	n := uint64(s.cfg.PageSize)
	bottom := uint64(1)
	if top > n {
		bottom = top - n + 1
	}
	// The page's headers and the one below it (for the prev link of the
	// lowest).
	hashes := map[uint64]anchor.Hash{0: anchor.ZeroHash}
	prevs := map[uint64]anchor.Hash{}
	lo := bottom
	if lo > 1 {
		lo--
	}
	for seq := top; seq >= lo && seq > 0; seq-- {
		hv := headerView{Seq: seq, HasRecordAPI: hasAPI}
		br, err := s.ledger.Batch(ctx, did, seq)
		if errors.Is(err, ledgerclient.ErrNotFound) {
			hv.Problem = "not on the ledger"
		} else if err != nil {
			return v, fmt.Errorf("batch %d: %w", seq, err)
		} else {
			hv.Height = br.Height
			h, err := anchor.ParseHeader(br.Header)
			switch {
			case err != nil:
				hv.Problem = err.Error()
			case h.Gateway != did || h.Seq != seq:
				hv.Problem = fmt.Sprintf("header names gateway %s seq %d", h.Gateway, h.Seq)
			default:
				hv.From, hv.To, hv.First, hv.Last, hv.Count = h.From, h.To, h.First, h.Last, h.Count
				hv.Root, hv.Hash = h.Root.String(), h.Hash().String()
				hv.SigOK = device.VerifySignature(pub, br.Header, br.Sig)
				hashes[seq], prevs[seq] = h.Hash(), h.Prev
			}
		}
		if seq >= bottom {
			v.Headers = append(v.Headers, hv)
		}
	}
	for i := range v.Headers {
		hv := &v.Headers[i]
		prev, ok1 := prevs[hv.Seq]
		below, ok2 := hashes[hv.Seq-1]
		if ok1 && ok2 {
			hv.PrevChecked, hv.PrevOK = true, prev == below
		}
	}
	if top < last.Seq {
		v.Newer = min(last.Seq+1, top+n+1)
	}
	if bottom > 1 {
		v.Older = bottom
	}
	return v, nil
}

type recordView struct {
	GSeq uint64
	DID  string
	Seq  uint64
	Kind string
	Recv string
}

type batchView struct {
	DID     string
	Seq     uint64
	Header  headerView
	Records []recordView
	Page    int
	Pages   int
	Prev    int // neighbouring pages (0: none)
	Next    int
}

// batchPage shows a batch's records from the gateway's API, paged.
func (s *Server) batchPage(w http.ResponseWriter, r *http.Request) {
	p := page{Title: "Batch", Nav: "consortium"}
	v, status, err := s.batch(r)
	if err != nil {
		p.Err = err.Error()
		w.WriteHeader(status)
	}
	p.Data = v
	s.render(w, r, "batch", p)
}

func (s *Server) batch(r *http.Request) (*batchView, int, error) {
	did, err := s.gatewayParam(r)
	if err != nil {
		return nil, http.StatusBadRequest, err
	}
	q := r.URL.Query()
	seq, err := strconv.ParseUint(q.Get("seq"), 10, 64)
	if err != nil || seq == 0 {
		return nil, http.StatusBadRequest, fmt.Errorf("seq %q: want a batch seq, 1 or more", q.Get("seq"))
	}
	pg := 1
	if ps := q.Get("page"); ps != "" {
		if pg, err = strconv.Atoi(ps); err != nil || pg < 1 {
			return nil, http.StatusBadRequest, fmt.Errorf("page %q: want 1 or more", ps)
		}
	}
	v := &batchView{DID: string(did), Seq: seq, Page: pg}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	br, err := s.ledger.Batch(ctx, did, seq)
	if err != nil {
		return v, http.StatusBadGateway, fmt.Errorf("batch %d on the ledger: %w", seq, err)
	}
	h, err := anchor.ParseHeader(br.Header)
	if err != nil {
		return v, http.StatusBadGateway, fmt.Errorf("batch %d header: %w", seq, err)
	}
	v.Header = headerView{Seq: seq, From: h.From, To: h.To, First: h.First, Last: h.Last, Count: h.Count,
		Root: h.Root.String(), Hash: h.Hash().String(), Height: br.Height}
	n := uint64(s.cfg.PageSize)
	v.Pages = int((h.Count + n - 1) / n)
	if pg > 1 {
		v.Prev = pg - 1
	}
	if pg < v.Pages {
		v.Next = pg + 1
	}
	from := h.First + uint64(pg-1)*n
	if from > h.Last {
		return v, http.StatusOK, nil
	}
	to := min(h.Last, from+n-1)
	ans, err := s.records(ctx, did, from, to)
	if err != nil {
		return v, http.StatusBadGateway, err
	}
	for _, rr := range ans.Records {
		v.Records = append(v.Records, recordView{GSeq: rr.GSeq, DID: string(rr.DID), Seq: rr.Seq, Kind: rr.Kind, Recv: rr.Recv})
	}
	return v, http.StatusOK, nil
}

// records asks the gateway's API for records from..to.
func (s *Server) records(ctx context.Context, did device.DID, from, to uint64) (*httpapi.RangeAnswer, error) {
	base, ok := s.gateways[did]
	if !ok {
		return nil, fmt.Errorf("no record API configured for gateway %s (portal gateways)", did)
	}
	u := base + "/v1/records?" + url.Values{"from_gseq": {fmt.Sprint(from)}, "to_gseq": {fmt.Sprint(to)}}.Encode()
	body, err := s.get(ctx, u, 64<<20)
	if err != nil {
		return nil, err
	}
	var ans httpapi.RangeAnswer
	if err := json.Unmarshal(body, &ans); err != nil {
		return nil, fmt.Errorf("gateway API answer: %w", err)
	}
	return &ans, nil
}

func (s *Server) get(ctx context.Context, u string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("gateway API: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("gateway API: %w", err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("gateway API: answer longer than %d bytes", limit)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("gateway API: %s: %.200s", resp.Status, body)
	}
	return body, nil
}

// proofDownload fetches a record's proof bundle from its gateway, checks
// that it parses as a bundle for that record, and hands it to the browser
// as a file.
func (s *Server) proofDownload(w http.ResponseWriter, r *http.Request) {
	did, err := s.gatewayParam(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	gseq, err := strconv.ParseUint(r.URL.Query().Get("gseq"), 10, 64)
	if err != nil || gseq == 0 {
		http.Error(w, "gseq: want a record's gseq, 1 or more", http.StatusBadRequest)
		return
	}
	base, ok := s.gateways[did]
	if !ok {
		http.Error(w, "no record API configured for this gateway", http.StatusNotFound)
		return
	}
	body, err := s.get(r.Context(), fmt.Sprintf("%s/v1/records/%d/proof", base, gseq), evidence.MaxBundleBytes)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	b, err := evidence.ParseBundle(body)
	if err == nil && (b.Record.Gateway != did || b.Record.GSeq != gseq) {
		err = fmt.Errorf("the gateway answered a bundle for gateway %s gseq %d", b.Record.Gateway, b.Record.GSeq)
	}
	if err != nil {
		http.Error(w, "proof bundle: "+err.Error(), http.StatusBadGateway)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="record-%d.json"`, gseq))
	_, _ = w.Write(body)
}

// anchoredBy is the time of block height+1, whose commit signs block
// height: a tx in block height was committed no later than this (the time
// in block height's own header comes from the votes of the block before,
// often earlier than the tx). It is false until that block exists.
func anchoredBy(ctx context.Context, cli *rpchttp.HTTP, height int64) (time.Time, bool) {
	h := height + 1
	hdr, err := cli.Header(ctx, &h)
	if err != nil || hdr.Header == nil {
		return time.Time{}, false
	}
	return hdr.Header.Time, true
}
