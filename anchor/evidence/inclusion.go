package evidence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	abci "github.com/cometbft/cometbft/abci/types"
	"github.com/cometbft/cometbft/crypto/merkle"
	cmtjson "github.com/cometbft/cometbft/libs/json"
	"github.com/cometbft/cometbft/types"

	"github.com/edgeanchor/edgeanchor/anchor"
)

// AnchorProofVersion is the version of the AnchorProof JSON form.
const AnchorProofVersion = 1

// Steps of AnchorProof verification, in the order they run. A VerifyError
// names the first one that failed.
const (
	StepTrust      = "trust"       // the trust itself is invalid
	StepDecode     = "decode"      // the proof is incomplete or malformed
	StepTxMatch    = "tx-match"    // the proof is about other tx bytes than the caller's
	StepHeader     = "header"      // the block header is not signed by the trusted validators
	StepTxProof    = "tx-proof"    // the tx is not in the block (Merkle proof against DataHash)
	StepNextHeader = "next-header" // the next header does not follow the block (light client, adjacent)
	StepResult     = "result"      // the tx result is not under the next header's LastResultsHash
	StepTxCode     = "tx-code"     // the ledger executed the tx with a non-zero code (refused it)
)

// ErrInvalidAnchorProof is matched (errors.Is) by every VerifyError: the
// anchor proof does not show that the tx committed and succeeded on the
// trusted ledger.
var ErrInvalidAnchorProof = errors.New("anchor: invalid anchor proof")

// VerifyError is a failed AnchorProof verification: Step names what failed
// (Step… constants), Err says why.
type VerifyError struct {
	Step string
	Err  error
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("anchor proof: %s: %v", e.Step, e.Err)
}

// Unwrap returns the cause.
func (e *VerifyError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrInvalidAnchorProof) true.
func (e *VerifyError) Is(target error) bool { return target == ErrInvalidAnchorProof }

func stepErr(step string, format string, a ...any) error {
	return &VerifyError{Step: step, Err: fmt.Errorf(format, a...)}
}

// AnchorProof shows, offline, that a tx committed at Height in a block signed
// by the trusted consortium and that the ledger executed it with code 0:
//
//   - Header (and Validators) is verified against a Trust: signed by +2/3
//     of exactly the validator set the trust names for its height;
//   - TxProof proves Tx is in that block (against Header.DataHash);
//   - NextHeader (Height+1, with NextValidators) is verified as the adjacent
//     header of Header;
//   - Result (the deterministic part of the tx's ExecTxResult: code, data,
//     gas wanted and used) and ResultProof prove the result is leaf Index
//     under NextHeader.LastResultsHash, the way CometBFT hashes results.
type AnchorProof struct {
	ChainID        string
	Height         int64
	Index          uint32
	Tx             []byte
	TxProof        merkle.Proof
	Header         *types.SignedHeader
	Validators     *types.ValidatorSet
	NextHeader     *types.SignedHeader
	NextValidators *types.ValidatorSet // nil when equal to Validators
	Result         abci.ExecTxResult
	ResultProof    merkle.Proof
}

type anchorProofJSON struct {
	Version        int             `json:"version"`
	ChainID        string          `json:"chain_id"`
	Height         int64           `json:"height"`
	Index          uint32          `json:"index"`
	Tx             anchor.Base64   `json:"tx"`
	TxProof        json.RawMessage `json:"tx_proof"`
	Header         json.RawMessage `json:"signed_header"`
	Validators     json.RawMessage `json:"validators"`
	NextHeader     json.RawMessage `json:"next_signed_header"`
	NextValidators json.RawMessage `json:"next_validators,omitempty"`
	Result         resultJSON      `json:"result"`
	ResultProof    json.RawMessage `json:"result_proof"`
}

type resultJSON struct {
	Code      uint32        `json:"code"`
	Data      anchor.Base64 `json:"data,omitempty"`
	GasWanted int64         `json:"gas_wanted"`
	GasUsed   int64         `json:"gas_used"`
}

// MarshalJSON writes the proof as JSON; CometBFT structures (headers,
// validator sets, Merkle proofs) use CometBFT's own JSON encoding.
func (p *AnchorProof) MarshalJSON() ([]byte, error) {
	w := anchorProofJSON{
		Version: AnchorProofVersion, ChainID: p.ChainID, Height: p.Height, Index: p.Index, Tx: p.Tx,
		Result: resultJSON{Code: p.Result.Code, Data: p.Result.Data, GasWanted: p.Result.GasWanted, GasUsed: p.Result.GasUsed},
	}
	// One form for an empty audit path, as the proofs have always been
	// written: the tx proof (from the node's JSON) omits "aunts", the
	// result proof (built here) writes "aunts":[].
	txProof, resultProof := p.TxProof, p.ResultProof
	if len(txProof.Aunts) == 0 {
		txProof.Aunts = nil
	}
	if len(resultProof.Aunts) == 0 {
		resultProof.Aunts = [][]byte{}
	}
	for _, f := range []struct {
		dst *json.RawMessage
		v   any
		nil bool
	}{
		{&w.TxProof, &txProof, false},
		{&w.Header, p.Header, p.Header == nil},
		{&w.Validators, p.Validators, p.Validators == nil},
		{&w.NextHeader, p.NextHeader, p.NextHeader == nil},
		{&w.NextValidators, p.NextValidators, p.NextValidators == nil},
		{&w.ResultProof, &resultProof, false},
	} {
		if f.nil {
			continue
		}
		b, err := cmtjson.Marshal(f.v)
		if err != nil {
			return nil, fmt.Errorf("anchor: encode anchor proof: %w", err)
		}
		*f.dst = b
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads the JSON form. It checks the form only; Verify checks
// the rest.
func (p *AnchorProof) UnmarshalJSON(data []byte) (err error) {
	defer func() { // CometBFT's JSON decoder panics on some inputs
		if r := recover(); r != nil {
			err = stepErr(StepDecode, "malformed: %v", r)
		}
	}()
	var w anchorProofJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return &VerifyError{Step: StepDecode, Err: anchor.LocateBase64Error(data, err)}
	}
	if w.Version != AnchorProofVersion {
		return stepErr(StepDecode, "version %d (want %d)", w.Version, AnchorProofVersion)
	}
	out := AnchorProof{
		ChainID: w.ChainID, Height: w.Height, Index: w.Index, Tx: w.Tx,
		Result: abci.ExecTxResult{Code: w.Result.Code, Data: w.Result.Data, GasWanted: w.Result.GasWanted, GasUsed: w.Result.GasUsed},
	}
	var h, nh types.SignedHeader
	var vs, nvs types.ValidatorSet
	for _, f := range []struct {
		name string
		src  json.RawMessage
		v    any
		opt  bool
	}{
		{"tx_proof", w.TxProof, &out.TxProof, false},
		{"signed_header", w.Header, &h, false},
		{"validators", w.Validators, &vs, false},
		{"next_signed_header", w.NextHeader, &nh, false},
		{"next_validators", w.NextValidators, &nvs, true},
		{"result_proof", w.ResultProof, &out.ResultProof, false},
	} {
		if len(f.src) == 0 || string(f.src) == "null" {
			if f.opt {
				continue
			}
			return stepErr(StepDecode, "%s is missing", f.name)
		}
		if err := cmtjson.Unmarshal(f.src, f.v); err != nil {
			return stepErr(StepDecode, "%s: %v", f.name, err)
		}
	}
	out.Header, out.Validators, out.NextHeader = &h, &vs, &nh
	if len(w.NextValidators) > 0 && string(w.NextValidators) != "null" {
		out.NextValidators = &nvs
	}
	// One encoding per value, CometBFT's members included (its decoder
	// takes hex in either case, skips unknown members and line breaks in
	// base64): the proof must be what it encodes back to.
	canonical, err := out.MarshalJSON()
	if err != nil {
		return &VerifyError{Step: StepDecode, Err: err}
	}
	if err := anchor.CheckCanonical(data, canonical); err != nil {
		return stepErr(StepDecode, "not in canonical form: %v", err)
	}
	*p = out
	return nil
}

// Verify checks the proof against trust, offline, using the local clock
// only to refuse headers from the future. It returns nil or a *VerifyError
// naming the failed step.
func (p *AnchorProof) Verify(trust *Trust) error {
	return p.VerifyAt(trust, time.Now())
}

// VerifyTx is Verify plus a check that the proof is about exactly tx.
func (p *AnchorProof) VerifyTx(trust *Trust, tx []byte) error {
	if !bytes.Equal(p.Tx, tx) {
		return stepErr(StepTxMatch, "proof is about other tx bytes")
	}
	return p.Verify(trust)
}

// CheckTrust checks that trust is valid and is about the proof's chain and,
// when the proof's block is signed by +2/3 of the proof's own validator set,
// that the trust names exactly that set for the block's height. ok says
// whether that comparison was made (false: the proof is not consistent in
// itself, which Verify reports). A *TrustMismatchError or ErrBadTrust says
// what is wrong with the trust.
func (p *AnchorProof) CheckTrust(trust *Trust) (ok bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			ok, err = false, nil // a malformed proof: Verify reports it
		}
	}()
	if trust == nil {
		return false, fmt.Errorf("%w: no trust given", ErrBadTrust)
	}
	if err := trust.Validate(); err != nil {
		return false, err
	}
	sh, vals := p.Header, p.Validators
	if sh == nil || sh.Header == nil || sh.Commit == nil || vals == nil ||
		vals.ValidateBasic() != nil || sh.ValidateBasic(sh.ChainID) != nil ||
		!bytes.Equal(sh.ValidatorsHash, vals.Hash()) ||
		vals.VerifyCommitLight(sh.ChainID, sh.Commit.BlockID, sh.Height, sh.Commit) != nil {
		return false, nil
	}
	if sh.ChainID != trust.ChainID {
		return false, fmt.Errorf("%w: the trust file is for chain %q, the bundle's block %d is of chain %q", ErrBadTrust, trust.ChainID, sh.Height, sh.ChainID)
	}
	from := sh.Time
	if pd := trust.periodAt(sh.Height); pd.Header != nil && sh.Height > pd.From {
		from = pd.Header.Time
	}
	if now := time.Now(); !from.Add(trust.TrustingPeriod).After(now) {
		return false, fmt.Errorf("%w: its trusting_period (%s) from block %d ended at %s (now %s): use a trust file with a longer trusting_period",
			ErrBadTrust, trust.TrustingPeriod, sh.Height, formatTime(from.Add(trust.TrustingPeriod)), formatTime(now))
	}
	if err := checkTrustedSet(trust, sh, vals); err != nil {
		return false, err
	}
	return true, nil
}

// VerifyAt is Verify with an explicit "now".
func (p *AnchorProof) VerifyAt(trust *Trust, now time.Time) (err error) {
	// CometBFT panics on some malformed structures (e.g. voting power
	// overflow); a proof is untrusted input.
	step := StepTrust
	defer func() {
		if r := recover(); r != nil {
			err = stepErr(step, "malformed input: %v", r)
		}
	}()
	if trust == nil {
		return stepErr(StepTrust, "no trust given")
	}
	if err := trust.Validate(); err != nil {
		return &VerifyError{Step: StepTrust, Err: err}
	}

	step = StepDecode
	if p.Header == nil || p.Header.Header == nil || p.Header.Commit == nil ||
		p.NextHeader == nil || p.NextHeader.Header == nil || p.NextHeader.Commit == nil ||
		p.Validators == nil || len(p.Tx) == 0 {
		return stepErr(StepDecode, "proof is incomplete")
	}
	if p.Height != p.Header.Height {
		return stepErr(StepDecode, "height %d but header height %d", p.Height, p.Header.Height)
	}
	if p.ChainID != trust.ChainID {
		return stepErr(StepHeader, "chain id %q, trusted %q", p.ChainID, trust.ChainID)
	}

	step = StepHeader
	if err := verifyHeader(trust, p.Header, p.Validators, now); err != nil {
		var tm *TrustMismatchError
		if errors.As(err, &tm) {
			return &VerifyError{Step: StepTrust, Err: err}
		}
		return &VerifyError{Step: StepHeader, Err: err}
	}

	step = StepTxProof
	if p.TxProof.Index != int64(p.Index) {
		return stepErr(StepTxProof, "proof index %d, claimed index %d", p.TxProof.Index, p.Index)
	}
	txp := types.TxProof{RootHash: p.Header.DataHash, Data: p.Tx, Proof: p.TxProof}
	if err := txp.Validate(p.Header.DataHash); err != nil {
		return &VerifyError{Step: StepTxProof, Err: fmt.Errorf("tx not in block %d: %w", p.Height, err)}
	}

	step = StepNextHeader
	if p.NextHeader.Height != p.Height+1 {
		return stepErr(StepNextHeader, "next header height %d, want %d", p.NextHeader.Height, p.Height+1)
	}
	nextVals := p.NextValidators
	if nextVals == nil {
		nextVals = p.Validators
	}
	if err := verifyAdjacent(p.Header, p.NextHeader, nextVals, trust.TrustingPeriod, now); err != nil {
		return &VerifyError{Step: StepNextHeader, Err: err}
	}
	// The light client checks the next header's validators and signatures,
	// not that it is the child of this block.
	if !bytes.Equal(p.NextHeader.LastBlockID.Hash, p.Header.Hash()) {
		return stepErr(StepNextHeader, "next header's last_block_id %X is not block %d's hash %X", p.NextHeader.LastBlockID.Hash, p.Height, p.Header.Hash())
	}

	step = StepResult
	if p.ResultProof.Index != p.TxProof.Index || p.ResultProof.Total != p.TxProof.Total {
		return stepErr(StepResult, "result proof is for leaf %d of %d, tx is %d of %d",
			p.ResultProof.Index, p.ResultProof.Total, p.TxProof.Index, p.TxProof.Total)
	}
	det := types.NewResults([]*abci.ExecTxResult{&p.Result})[0]
	leaf, err := det.Marshal()
	if err != nil {
		return &VerifyError{Step: StepResult, Err: err}
	}
	if err := p.ResultProof.Verify(p.NextHeader.LastResultsHash, leaf); err != nil {
		return &VerifyError{Step: StepResult, Err: fmt.Errorf("result not under LastResultsHash of block %d: %w", p.NextHeader.Height, err)}
	}

	step = StepTxCode
	if p.Result.Code != 0 {
		return stepErr(StepTxCode, "ledger refused the tx with code %d", p.Result.Code)
	}
	// The ledger's result data for an applied tx is the SM3 of its body
	// (docs/ledger.md): the result names the tx it is about.
	if tx, err := anchor.DecodeTx(p.Tx); err != nil {
		return &VerifyError{Step: StepResult, Err: fmt.Errorf("tx: %w", err)}
	} else if h := anchor.SM3(tx.Body); !bytes.Equal(p.Result.Data, h[:]) {
		return stepErr(StepResult, "result data %X is not the SM3 of the tx body %X", p.Result.Data, h[:])
	}
	return nil
}

// verifyHeader checks that sh (with its validator set vals) is a header of
// the trusted chain. A *TrustMismatchError means sh is signed by +2/3 of its
// own set but that set is not the trust's set for its height.
func verifyHeader(trust *Trust, sh *types.SignedHeader, vals *types.ValidatorSet, now time.Time) error {
	if err := vals.ValidateBasic(); err != nil {
		return fmt.Errorf("validator set: %w", err)
	}
	if err := sh.ValidateBasic(trust.ChainID); err != nil {
		return err
	}
	if !bytes.Equal(sh.ValidatorsHash, vals.Hash()) {
		return fmt.Errorf("validator set %X is not the header's %X", vals.Hash(), sh.ValidatorsHash)
	}
	if sh.Time.After(now.Add(DefaultMaxClockDrift)) {
		return fmt.Errorf("header time %s is in the future (now %s)", formatTime(sh.Time), formatTime(now))
	}
	// The header must be signed by +2/3 of its own set, and that set must
	// be exactly the one the trust names for this height (the set of the
	// trust's range that covers it: the base, or a checkpoint).
	if err := vals.VerifyCommitLight(trust.ChainID, sh.Commit.BlockID, sh.Height, sh.Commit); err != nil {
		return err
	}
	if err := checkTrustedSet(trust, sh, vals); err != nil {
		return err
	}
	if pd := trust.periodAt(sh.Height); pd.Header != nil && sh.Height == pd.From && !bytes.Equal(sh.Hash(), pd.HeaderHash) {
		return fmt.Errorf("header %X at the trusted height %d is not the trusted header %X", sh.Hash(), sh.Height, pd.HeaderHash)
	}
	if pd := trust.periodAt(sh.Height); pd.Header != nil && sh.Height > pd.From {
		if expiresAt := pd.Header.Time.Add(trust.TrustingPeriod); !expiresAt.After(now) {
			return fmt.Errorf("the trust file's trusting period expired at %s (now %s): use a trust file with a longer trusting_period",
				formatTime(expiresAt), formatTime(now))
		}
	}
	return nil
}

// formatTime writes a time the way every edgeanchor document does: RFC 3339
// in UTC, nanoseconds if any (never Go's default form with its monotonic
// clock reading).
func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
