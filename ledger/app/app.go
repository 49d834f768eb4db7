// Package app is the consortium ledger's CometBFT ABCI application: it
// keeps gateway membership, the device registry and gateways' batch
// anchors (docs/ledger.md). The node that hosts it, ledger homes, member
// files and genesis assembly are package ledger.
package app

import (
	"context"
	"crypto/ecdsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"

	dbm "github.com/cometbft/cometbft-db"
	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/crypto/tmhash"

	"github.com/edgeanchor/edgeanchor/anchor"
	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
)

// AppVersion is the application protocol version reported by Info.
const AppVersion uint64 = 1

// App is the ledger's ABCI application. Its state lives in a cometbft-db
// database; FinalizeBlock stages a block's writes and Commit writes them in
// one synced batch with the new height and app hash, so a restart resumes at
// the last committed block and CometBFT's handshake replays the rest.
//
// Every transaction goes through one function, execute, whether it comes
// from CheckTx, PrepareProposal, ProcessProposal or FinalizeBlock: the result
// depends only on the committed state and the transactions before it, never
// on the clock or on map order.
type App struct {
	abci.BaseApplication

	mu      sync.Mutex
	db      dbm.DB
	state   *committed // the database, with decoded gateway records
	log     *slog.Logger
	metrics *Metrics

	height  int64  // last committed height
	appHash []byte // app hash of the last committed height

	initStage  *overlay // InitChain's writes, committed with the first block
	block      *overlay // FinalizeBlock's writes, committed by Commit
	blockHash  []byte
	blockH     int64
	checkState *overlay // CheckTx's view: committed state + mempool txs

	keys     map[string]*ecdsa.PublicKey // parsed keys by DER (verification caches per pointer)
	parsed   map[string]*parsedTx        // decoded txs by CometBFT tx hash (raw SHA-256)
	blockTxs []string                    // parsed keys of the finalized block's txs, dropped by Commit

	listPage atomic.Int64 // devices in one /gateway/{did}/devices answer (SetDevicesPage)
}

var _ abci.Application = (*App)(nil)

const (
	maxKeyCache    = 4096
	maxParsedCache = 16384
)

// NewApp opens the application over db (which it does not close) and loads
// the committed height, app hash and genesis keys. metrics may be nil.
func NewApp(db dbm.DB, logger *slog.Logger, metrics *Metrics) (*App, error) {
	if metrics == nil {
		metrics, _ = NewMetrics(nil)
	}
	a := &App{
		db: db, log: logger, metrics: metrics,
		keys:   map[string]*ecdsa.PublicKey{},
		parsed: map[string]*parsedTx{},
	}
	a.state = newCommitted(db)
	st := newOverlay(a.state)
	var m meta
	if _, err := st.getJSON(keyMeta, &m); err != nil {
		return nil, err
	}
	a.height, a.appHash = m.Height, m.AppHash
	a.checkState = newOverlay(a.base())
	return a, nil
}

// Height returns the last committed height.
func (a *App) Height() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.height
}

// LastCommit returns the last committed height and its app hash.
func (a *App) LastCommit() (int64, []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.height, append([]byte(nil), a.appHash...)
}

// base is the committed state plus InitChain's writes before block 1.
func (a *App) base() reader {
	if a.initStage != nil {
		return a.initStage
	}
	return a.state
}

// Info reports the last committed height and app hash.
func (a *App) Info(context.Context, *abci.RequestInfo) (*abci.ResponseInfo, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return &abci.ResponseInfo{
		Data:             "edgeanchor-ledger",
		Version:          "1",
		AppVersion:       AppVersion,
		LastBlockHeight:  a.height,
		LastBlockAppHash: a.appHash,
	}, nil
}

// InitChain reads the genesis app_state (committee, regulators, initial
// gateways) and the genesis validators, and returns the genesis app hash.
func (a *App) InitChain(_ context.Context, req *abci.RequestInitChain) (*abci.ResponseInitChain, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	g, err := anchor.ParseGenesisState(req.AppStateBytes)
	if err != nil {
		return nil, fmt.Errorf("ledger: InitChain: %w", err)
	}
	// CometBFT hands over app_state as it read it: from genesis.json on the
	// first start, re-encoded from its state database later (a handshake
	// replay). Hash and store one canonical encoding so both agree.
	canon, err := json.Marshal(g)
	if err != nil {
		return nil, fmt.Errorf("ledger: InitChain: %w", err)
	}
	st := newOverlay(a.state)
	st.set(keyGenesis, canon)
	if err := initGovernance(st, g, req.Validators); err != nil {
		return nil, fmt.Errorf("ledger: InitChain: %w", err)
	}
	for _, gw := range g.Gateways {
		st.setJSON(keyGateway(gw.DID), &anchor.GatewayRecord{
			DID: gw.DID, Pub: gw.Pub, Site: gw.Site, Name: gw.Name, Status: StatusMember,
		})
	}
	a.initStage = st
	a.appHash = genesisAppHash(canon)
	a.checkState = newOverlay(a.base())
	a.log.Info("ledger genesis loaded", "committee", len(g.Committee.Members), "threshold", g.Committee.Threshold, "regulators", len(g.Regulators), "gateways", len(g.Gateways))
	return &abci.ResponseInitChain{AppHash: a.appHash}, nil
}

// CheckTx validates a transaction against the committed state plus the
// transactions already in the mempool, so a gateway may have several
// consecutive batches in flight. Refusals are answered with a code, never a
// Go error.
func (a *App) CheckTx(_ context.Context, req *abci.RequestCheckTx) (*abci.ResponseCheckTx, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out, ref := a.execute(a.checkState, req.Tx, a.height+1, 0)
	if ref != nil {
		if req.Type == abci.CheckTxType_New {
			a.metrics.refused.WithLabelValues(ref.code.Name()).Inc()
		}
		return &abci.ResponseCheckTx{Code: uint32(ref.code), Codespace: Codespace, Log: ref.Error()}, nil
	}
	return &abci.ResponseCheckTx{Code: uint32(CodeOK), Data: out.data, GasWanted: 1}, nil
}

// PrepareProposal keeps, in mempool order, the transactions that apply.
func (a *App) PrepareProposal(_ context.Context, req *abci.RequestPrepareProposal) (*abci.ResponsePrepareProposal, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := newOverlay(a.base())
	txs := make([][]byte, 0, len(req.Txs))
	var size int64
	for i, tx := range req.Txs {
		if size+int64(len(tx)) > req.MaxTxBytes {
			break
		}
		if _, ref := a.execute(st, tx, req.Height, uint32(i)); ref != nil {
			continue
		}
		size += int64(len(tx))
		txs = append(txs, tx)
	}
	return &abci.ResponsePrepareProposal{Txs: txs}, nil
}

// ProcessProposal rejects a block that holds any transaction the rules
// refuse: a correct proposer never proposes one.
func (a *App) ProcessProposal(_ context.Context, req *abci.RequestProcessProposal) (*abci.ResponseProcessProposal, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := newOverlay(a.base())
	for i, tx := range req.Txs {
		if _, ref := a.execute(st, tx, req.Height, uint32(i)); ref != nil {
			a.log.Warn("ledger proposal rejected", "height", req.Height, "index", i, "code", ref.code.Name(), "error", ref.Error())
			return &abci.ResponseProcessProposal{Status: abci.ResponseProcessProposal_REJECT}, nil
		}
	}
	return &abci.ResponseProcessProposal{Status: abci.ResponseProcessProposal_ACCEPT}, nil
}

// FinalizeBlock applies the block's transactions to a staging overlay and
// returns each result and the new app hash; Commit persists them.
func (a *App) FinalizeBlock(_ context.Context, req *abci.RequestFinalizeBlock) (*abci.ResponseFinalizeBlock, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := newOverlay(a.base())
	st.final = true
	results := make([]*abci.ExecTxResult, len(req.Txs))
	var applied []appliedTx
	var counts []func()
	var updates []abci.ValidatorUpdate
	for i, tx := range req.Txs {
		out, ref := a.execute(st, tx, req.Height, uint32(i))
		if ref != nil {
			a.metrics.refused.WithLabelValues(ref.code.Name()).Inc()
			results[i] = &abci.ExecTxResult{Code: uint32(ref.code), Codespace: Codespace, Log: ref.Error()}
			continue
		}
		results[i] = &abci.ExecTxResult{Code: uint32(CodeOK), Data: out.data, Events: out.events, Log: out.typ}
		applied = append(applied, appliedTx{index: uint32(i), tx: tx})
		if out.count != nil {
			counts = append(counts, out.count)
		}
		updates = append(updates, out.valUpdates...)
	}
	for _, c := range counts {
		c()
	}
	a.blockTxs = a.blockTxs[:0]
	for _, tx := range req.Txs {
		a.blockTxs = append(a.blockTxs, string(tmhash.Sum(tx)))
	}
	a.block = st
	a.blockH = req.Height
	a.blockHash = appHashStep(a.appHash, req.Height, applied)
	resp := &abci.ResponseFinalizeBlock{TxResults: results, AppHash: a.blockHash}
	if len(updates) > 0 {
		resp.ValidatorUpdates = mergeValidatorUpdates(updates)
		a.log.Info("ledger validator set change", "height", req.Height, "updates", len(resp.ValidatorUpdates))
	}
	return resp, nil
}

// Commit writes the staged block, height and app hash in one synced batch.
func (a *App) Commit(context.Context, *abci.RequestCommit) (*abci.ResponseCommit, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.block == nil {
		return nil, errors.New("ledger: Commit without FinalizeBlock")
	}
	a.block.setJSON(keyMeta, &meta{Height: a.blockH, AppHash: a.blockHash})
	batch := a.db.NewBatch()
	defer batch.Close()
	if a.initStage != nil {
		if err := a.initStage.flush(batch); err != nil {
			return nil, err
		}
	}
	if err := a.block.flush(batch); err != nil {
		return nil, err
	}
	if err := batch.WriteSync(); err != nil {
		return nil, fmt.Errorf("ledger: commit height %d: %w", a.blockH, err)
	}
	if a.initStage != nil {
		a.state.forget(a.initStage.writes)
	}
	a.state.forget(a.block.writes)
	a.height, a.appHash = a.blockH, a.blockHash
	a.block, a.initStage = nil, nil
	// The block's txs left the mempool: their decoded form is not needed
	// again (a resubmission is decoded afresh), so the cache holds the
	// pending txs and is not cleared under load (which made every pending
	// tx's signature be verified again at the next recheck).
	for _, k := range a.blockTxs {
		delete(a.parsed, k)
	}
	a.blockTxs = a.blockTxs[:0]
	a.checkState = newOverlay(a.state)
	return &abci.ResponseCommit{}, nil
}

// outcome is what applying one transaction did.
type outcome struct {
	typ    string
	data   []byte
	events []abci.Event
	count  func() // metric update, run once the block is final
	// valUpdates are the validator changes an executed proposal made.
	valUpdates []abci.ValidatorUpdate
}

// execute is the one validation function: it checks raw against the state
// st and, if every rule holds, applies it to st. height and index say where
// the tx sits (recorded in registrations and anchors).
func (a *App) execute(st *overlay, raw []byte, height int64, index uint32) (*outcome, *refusal) {
	p := a.parse(raw)
	if p.ref != nil {
		return nil, p.ref
	}
	tx, body, bodyHash := p.tx, p.body, p.bodyHash
	pos := position{height: height, index: index, tx: p.hash}
	check := func(pub *ecdsa.PublicKey) *refusal {
		if !a.verifyTx(p, pub) {
			return refuse(CodeBadSignature, "signer "+string(tx.Signer))
		}
		seen, err := st.get(keyBody(bodyHash))
		if err != nil {
			panic(err) // the database failed: the node must stop, not diverge
		}
		if seen != nil {
			return refuse(CodeDuplicate, "body sm3 "+bodyHash.String()+" applied at height "+string(seen))
		}
		return nil
	}
	var out *outcome
	var ref *refusal
	switch b := body.(type) {
	case *anchor.ProposalBody:
		out, ref = a.propose(st, tx, b, bodyHash, pos, check)
	case *anchor.ApprovalBody:
		out, ref = a.approve(st, tx, b, pos, check)
	case *anchor.RegisterDeviceBody:
		out, ref = a.registerDevice(st, tx, b, pos, check)
	case *anchor.RevokeDeviceBody:
		out, ref = a.revokeDevice(st, tx, b, pos, check)
	case *anchor.BatchHeader:
		out, ref = a.anchorBatch(st, tx, b, bodyHash, pos, check)
	default:
		return nil, refuse(CodeUnknownType, fmt.Sprintf("%T", body))
	}
	if ref != nil {
		return nil, ref
	}
	st.set(keyBody(bodyHash), []byte(strconv.FormatInt(height, 10)))
	out.data = bodyHash[:]
	return out, nil
}

type position struct {
	height int64
	index  uint32
	tx     string
}

type checkFunc func(pub *ecdsa.PublicKey) *refusal

// member returns the gateway's record and key if it is a current member.
func (a *App) member(st *overlay, did device.DID) (*anchor.GatewayRecord, *ecdsa.PublicKey, *refusal) {
	var rec anchor.GatewayRecord
	found, err := st.getJSON(keyGateway(did), &rec)
	if err != nil {
		panic(err)
	}
	if found {
		if r := succeeded(&rec); r != nil {
			return nil, nil, r
		}
	}
	if !found || rec.Status != StatusMember {
		return nil, nil, refuse(CodeNotMember, string(did))
	}
	pub, err := a.parseKey(rec.Pub)
	if err != nil {
		panic(fmt.Errorf("ledger: stored gateway key: %w", err))
	}
	return &rec, pub, nil
}

func (a *App) registerDevice(st *overlay, tx *anchor.Tx, b *anchor.RegisterDeviceBody, pos position, check checkFunc) (*outcome, *refusal) {
	if tx.Signer != b.Gateway {
		return nil, refuse(CodeWrongSigner, "signer "+string(tx.Signer)+" is not the gateway "+string(b.Gateway))
	}
	gw, gwPub, ref := a.member(st, b.Gateway)
	if ref != nil {
		return nil, ref
	}
	if r := check(gwPub); r != nil {
		return nil, r
	}
	if len(b.DeviceSig) == 0 {
		return nil, refuse(CodeDeviceSigMissing, "")
	}
	reg, devPub, err := credential.ParseRegistration(b.Registration)
	if err != nil {
		return nil, refuse(CodeRegistrationInvalid, err.Error())
	}
	if !device.VerifySignature(devPub, b.Registration, b.DeviceSig) {
		return nil, refuse(CodeDeviceSigInvalid, string(reg.DID))
	}
	if reg.Site != gw.Site {
		return nil, refuse(CodeWrongSite, fmt.Sprintf("device site %q, gateway site %q", reg.Site, gw.Site))
	}
	var old anchor.DeviceRecord
	found, err := st.getJSON(keyDevice(reg.DID), &old)
	if err != nil {
		panic(err)
	}
	if found {
		return nil, refuse(CodeDeviceExists, fmt.Sprintf("%s is %s (registered at height %d by %s)", reg.DID, old.Status, old.Height, old.Gateway))
	}
	st.setJSON(keyDevice(reg.DID), &anchor.DeviceRecord{
		DID: reg.DID, Pub: reg.Pub, Kind: reg.Kind, Site: reg.Site, Gateway: b.Gateway,
		Status: StatusActive, Height: pos.height, Tx: pos.tx,
		Registration: b.Registration, DeviceSig: b.DeviceSig,
	})
	st.set(keyGatewayDevice(b.Gateway, reg.DID), []byte{})
	return &outcome{typ: anchor.TypeRegisterDevice, count: a.metrics.registrations.Inc, events: []abci.Event{{
		Type: "device", Attributes: []abci.EventAttribute{
			{Key: "did", Value: string(reg.DID), Index: true},
			{Key: "action", Value: "register", Index: true},
			{Key: "gateway", Value: string(b.Gateway), Index: true},
		},
	}}}, nil
}

func (a *App) revokeDevice(st *overlay, tx *anchor.Tx, b *anchor.RevokeDeviceBody, pos position, check checkFunc) (*outcome, *refusal) {
	var rec anchor.DeviceRecord
	found, err := st.getJSON(keyDevice(b.DID), &rec)
	if err != nil {
		panic(err)
	}
	if !found {
		return nil, refuse(CodeDeviceUnknown, string(b.DID))
	}
	var signerPub *ecdsa.PublicKey
	// The registering gateway may revoke even after leaving the consortium;
	// after a key rotation its successor does, and the old key may not.
	holder, holderPub := a.currentHolder(st, rec.Gateway)
	switch {
	case tx.Signer == holder.DID:
		signerPub = holderPub
	case tx.Signer != holder.DID && inLine(st, holder.DID, tx.Signer):
		var gw anchor.GatewayRecord
		if _, err := st.getJSON(keyGateway(tx.Signer), &gw); err != nil {
			panic(err)
		}
		return nil, succeeded(&gw)
	case a.regulators(st).keys[tx.Signer] != nil:
		signerPub = a.regulators(st).keys[tx.Signer]
	default:
		return nil, refuse(CodeWrongSigner, string(tx.Signer)+" is neither the registering gateway nor a regulator")
	}
	if r := check(signerPub); r != nil {
		return nil, r
	}
	if rec.Status == StatusRevoked {
		return nil, refuse(CodeDeviceRevoked, fmt.Sprintf("%s revoked at height %d", rec.DID, rec.RevokedHeight))
	}
	rec.Status, rec.RevokedHeight, rec.RevokedTx = StatusRevoked, pos.height, pos.tx
	rec.RevokedBy, rec.RevokeReason = tx.Signer, b.Reason
	st.setJSON(keyDevice(b.DID), &rec)
	return &outcome{typ: anchor.TypeRevokeDevice, count: a.metrics.revocations.Inc, events: []abci.Event{{
		Type: "device", Attributes: []abci.EventAttribute{
			{Key: "did", Value: string(rec.DID), Index: true},
			{Key: "action", Value: "revoke", Index: true},
			{Key: "gateway", Value: string(rec.Gateway), Index: true},
		},
	}}}, nil
}

func (a *App) anchorBatch(st *overlay, tx *anchor.Tx, h *anchor.BatchHeader, bodyHash anchor.Hash, pos position, check checkFunc) (*outcome, *refusal) {
	if tx.Signer != h.Gateway {
		return nil, refuse(CodeWrongSigner, "signer "+string(tx.Signer)+" is not the gateway "+string(h.Gateway))
	}
	gw, gwPub, ref := a.member(st, h.Gateway)
	if ref != nil {
		return nil, ref
	}
	if r := check(gwPub); r != nil {
		return nil, r
	}
	if h.Seq != gw.LastSeq+1 {
		return nil, refuse(CodeSequenceGap, fmt.Sprintf("seq %d, want %d", h.Seq, gw.LastSeq+1))
	}
	if h.Prev != gw.LastHash {
		return nil, refuse(CodeWrongPrev, fmt.Sprintf("prev %s, want %s", h.Prev, gw.LastHash))
	}
	if h.First != gw.LastRecord+1 {
		return nil, refuse(CodeRecordGap, fmt.Sprintf("first %d, want %d", h.First, gw.LastRecord+1))
	}
	hash := bodyHash // the header hash is SM3 of the body bytes
	gw.LastSeq, gw.LastHash, gw.LastRecord = h.Seq, hash, h.Last
	st.setJSON(keyGateway(h.Gateway), gw)
	if !st.final {
		// CheckTx, rechecks and the proposal checks: the gateway record is
		// all a later check reads; the batch record, its root index and the
		// event are for queries and the block's results only.
		return &outcome{typ: anchor.TypeAnchorBatch}, nil
	}
	st.setJSON(keyBatch(h.Gateway, h.Seq), &anchor.BatchRecord{
		Gateway: h.Gateway, Seq: h.Seq, Header: tx.Body, Sig: tx.Sig, Hash: hash, Root: h.Root,
		First: h.First, Last: h.Last, Height: pos.height, Tx: pos.tx, Index: pos.index,
	})
	st.set(keyRoot(h.Root, h.Gateway, h.Seq), []byte{})
	gwLabel := string(h.Gateway)
	return &outcome{
		typ:   anchor.TypeAnchorBatch,
		count: func() { a.metrics.anchors.WithLabelValues(gwLabel).Inc() },
		events: []abci.Event{{
			Type: "anchor", Attributes: []abci.EventAttribute{
				{Key: "gateway", Value: gwLabel, Index: true},
				{Key: "seq", Value: strconv.FormatUint(h.Seq, 10), Index: true},
				{Key: "root", Value: h.Root.String(), Index: true},
			},
		}},
	}, nil
}

// parseKey parses an SPKI DER key once and keeps the pointer: the SM2
// library caches per-key precomputation by pointer.
func (a *App) parseKey(der []byte) (*ecdsa.PublicKey, error) {
	if pub, ok := a.keys[string(der)]; ok {
		return pub, nil
	}
	pub, err := device.ParsePublicKeyDER(der)
	if err != nil {
		return nil, err
	}
	if len(a.keys) >= maxKeyCache {
		clear(a.keys)
	}
	a.keys[string(der)] = pub
	return pub, nil
}

// parsedTx is a decoded transaction. Decoding and signature checks depend
// only on the bytes (and the key), so CheckTx, PrepareProposal,
// ProcessProposal and FinalizeBlock share one result: the cache changes
// speed, never answers.
type parsedTx struct {
	tx       *anchor.Tx
	body     any
	ref      *refusal
	hash     string // CometBFT tx hash, lowercase hex
	bodyHash anchor.Hash
	verified *ecdsa.PublicKey // the key the signature verified under
}

func (a *App) parse(raw []byte) *parsedTx {
	sum := tmhash.Sum(raw)
	if p, ok := a.parsed[string(sum)]; ok {
		return p
	}
	p := &parsedTx{hash: hex.EncodeToString(sum)}
	tx, err := anchor.DecodeTx(raw)
	if err == nil {
		p.tx, p.bodyHash = tx, tx.BodyHash()
		p.body, err = tx.DecodeBody()
	}
	switch {
	case errors.Is(err, anchor.ErrUnknownTxType):
		p.ref = refuse(CodeUnknownType, err.Error())
	case err != nil:
		p.ref = refuse(CodeMalformed, err.Error())
	}
	if len(a.parsed) >= maxParsedCache {
		clear(a.parsed)
	}
	a.parsed[string(sum)] = p
	return p
}

// verifyTx checks the tx signature under pub, once per (tx, key).
func (a *App) verifyTx(p *parsedTx, pub *ecdsa.PublicKey) bool {
	if p.verified == pub {
		return true
	}
	if !p.tx.VerifySignature(pub) {
		return false
	}
	p.verified = pub
	return true
}
