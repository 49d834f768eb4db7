package evidence

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"

	cmtjson "github.com/cometbft/cometbft/libs/json"
	cmtmath "github.com/cometbft/cometbft/libs/math"
	"github.com/cometbft/cometbft/types"
)

// CheckpointTrustLevel is the share of the previous validator set's power
// that must have signed a checkpoint's header: CometBFT's light client
// skipping rule (light.DefaultTrustLevel), which holds as long as less than
// a third of the previous set's power is faulty.
var CheckpointTrustLevel = cmtmath.Fraction{Numerator: 1, Denominator: 3}

// Checkpoint is one step of a trust file that follows the chain's validator
// set: from Height on (until the next checkpoint), the chain's validator set
// is Validators. Header is the chain's signed header at Height: signed by
// +2/3 of Validators (its validators_hash is theirs) and by +1/3 of the
// power of the set before it (the previous checkpoint's, or the trust's
// base set), so a trust file only ever grows by steps verified from the one
// before.
type Checkpoint struct {
	Height     int64
	HeaderHash []byte
	Header     *types.SignedHeader
	Validators *types.ValidatorSet
}

type checkpointJSON struct {
	Height     int64           `json:"height"`
	HeaderHash string          `json:"header_hash"`
	Header     json.RawMessage `json:"signed_header"`
	Validators json.RawMessage `json:"validators"`
}

// MarshalJSON writes a checkpoint as the trust file holds it, the header
// and set in CometBFT's JSON encoding.
func (c Checkpoint) MarshalJSON() ([]byte, error) {
	w := checkpointJSON{Height: c.Height, HeaderHash: hex.EncodeToString(c.HeaderHash)}
	var err error
	if w.Header, err = cmtjson.Marshal(c.Header); err != nil {
		return nil, fmt.Errorf("anchor: encode checkpoint header: %w", err)
	}
	if w.Validators, err = cmtjson.Marshal(c.Validators); err != nil {
		return nil, fmt.Errorf("anchor: encode checkpoint validators: %w", err)
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads a checkpoint; Trust.Validate checks it.
func (c *Checkpoint) UnmarshalJSON(data []byte) (err error) {
	defer func() { // CometBFT's JSON decoder panics on some inputs
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: checkpoint: %v", ErrBadTrust, r)
		}
	}()
	var w checkpointJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("%w: checkpoint: %v", ErrBadTrust, err)
	}
	out := Checkpoint{Height: w.Height}
	if out.HeaderHash, err = hex.DecodeString(w.HeaderHash); err != nil {
		return fmt.Errorf("%w: checkpoint at height %d: header_hash: %v", ErrBadTrust, w.Height, err)
	}
	if len(w.Header) > 0 && string(w.Header) != "null" {
		var sh types.SignedHeader
		if err := cmtjson.Unmarshal(w.Header, &sh); err != nil {
			return fmt.Errorf("%w: checkpoint at height %d: signed_header: %v", ErrBadTrust, w.Height, err)
		}
		out.Header = &sh
	}
	if len(w.Validators) > 0 && string(w.Validators) != "null" {
		var vs types.ValidatorSet
		if err := cmtjson.Unmarshal(w.Validators, &vs); err != nil {
			return fmt.Errorf("%w: checkpoint at height %d: validators: %v", ErrBadTrust, w.Height, err)
		}
		out.Validators = &vs
	}
	*c = out
	return nil
}

// trustPeriod is one range of heights of a trust file: from From (0: from
// the chain's start) until the next period, the chain's validator set is
// Validators. Header is the signed header at From that pins it (nil for a
// genesis base).
type trustPeriod struct {
	Index      int // 0: the base set; k: checkpoint k (1-based)
	From       int64
	Header     *types.SignedHeader
	HeaderHash []byte
	Validators *types.ValidatorSet
}

// periods lists the trust's ranges in height order: the base (genesis set
// or trusted header), then each checkpoint.
func (t *Trust) periods() []trustPeriod {
	out := []trustPeriod{{Index: 0, From: t.Height, Header: t.Header, HeaderHash: t.HeaderHash, Validators: t.Validators}}
	for i, c := range t.Checkpoints {
		out = append(out, trustPeriod{Index: i + 1, From: c.Height, Header: c.Header, HeaderHash: c.HeaderHash, Validators: c.Validators})
	}
	return out
}

// periodAt is the period whose range covers height: the last checkpoint at
// or below it, else the base (which also covers heights below a header-mode
// trust's height).
func (t *Trust) periodAt(height int64) trustPeriod {
	ps := t.periods()
	for i := len(ps) - 1; i > 0; i-- {
		if ps[i].From <= height {
			return ps[i]
		}
	}
	return ps[0]
}

// LastHeight is the height from which the trust's last validator set holds:
// its last checkpoint's height, else the trusted height (0 in genesis mode).
func (t *Trust) LastHeight() int64 {
	if n := len(t.Checkpoints); n > 0 {
		return t.Checkpoints[n-1].Height
	}
	return t.Height
}

// LastValidators is the trust's validator set for heights from LastHeight on.
func (t *Trust) LastValidators() *types.ValidatorSet {
	if n := len(t.Checkpoints); n > 0 {
		return t.Checkpoints[n-1].Validators
	}
	return t.Validators
}

// AppendCheckpoint adds the signed header sh (with its validator set vals)
// as the trust's next checkpoint, after checking it follows from the last
// one (checkCheckpoint). The trust is unchanged on error.
func (t *Trust) AppendCheckpoint(sh *types.SignedHeader, vals *types.ValidatorSet) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: checkpoint: malformed input: %v", ErrBadTrust, r)
		}
	}()
	if sh == nil || sh.Header == nil || sh.Commit == nil || vals == nil {
		return fmt.Errorf("%w: checkpoint needs a signed header and its validator set", ErrBadTrust)
	}
	c := Checkpoint{Height: sh.Height, HeaderHash: sh.Hash(), Header: sh, Validators: vals}
	ps := t.periods()
	if err := t.checkCheckpoint(len(t.Checkpoints)+1, ps[len(ps)-1], c); err != nil {
		return err
	}
	t.Checkpoints = append(t.Checkpoints, c)
	return nil
}

// validateCheckpoints checks every checkpoint from the one before it.
func (t *Trust) validateCheckpoints() error {
	ps := t.periods()
	for i, c := range t.Checkpoints {
		if err := t.checkCheckpoint(i+1, ps[i], c); err != nil {
			return err
		}
	}
	return nil
}

// checkCheckpoint checks checkpoint number k (1-based) against prev, the
// period before it: the header is of the trust's chain, above prev's height
// and later in time; it hashes to HeaderHash; Validators is exactly the set
// the header names (validators_hash) and +2/3 of it signed the header; and
// +1/3 of prev's validator set's power signed it too (the light client's
// skipping verification), so the new set was handed over by the old.
func (t *Trust) checkCheckpoint(k int, prev trustPeriod, c Checkpoint) error {
	where := fmt.Sprintf("checkpoint %d (height %d)", k, c.Height)
	if c.Header == nil || c.Header.Header == nil || c.Header.Commit == nil || c.Validators == nil {
		return fmt.Errorf("%w: %s needs signed_header and validators", ErrBadTrust, where)
	}
	sh := c.Header
	if err := sh.ValidateBasic(t.ChainID); err != nil {
		return fmt.Errorf("%w: %s: signed_header: %v", ErrBadTrust, where, err)
	}
	if sh.Height != c.Height {
		return fmt.Errorf("%w: %s: its header is of height %d", ErrBadTrust, where, sh.Height)
	}
	if c.Height <= prev.From {
		return fmt.Errorf("%w: %s is not above the height before it (%d): checkpoints go up in height", ErrBadTrust, where, prev.From)
	}
	if !bytes.Equal(sh.Hash(), c.HeaderHash) {
		return fmt.Errorf("%w: %s: header_hash %X does not match its header %X", ErrBadTrust, where, c.HeaderHash, sh.Hash())
	}
	if prev.Header != nil && !sh.Time.After(prev.Header.Time) {
		return fmt.Errorf("%w: %s: header time %s is not after the time of height %d (%s)", ErrBadTrust, where,
			formatTime(sh.Time), prev.From, formatTime(prev.Header.Time))
	}
	if err := c.Validators.ValidateBasic(); err != nil {
		return fmt.Errorf("%w: %s: validators: %v", ErrBadTrust, where, err)
	}
	if got := c.Validators.Hash(); !bytes.Equal(got, sh.ValidatorsHash) {
		return fmt.Errorf("%w: %s: its validator set (hash %X) is not the set its header names (validators_hash %X): the set was edited, or is not a set the chain had",
			ErrBadTrust, where, got, sh.ValidatorsHash)
	}
	if prev.Header != nil && c.Height == prev.From+1 && !bytes.Equal(sh.ValidatorsHash, prev.Header.NextValidatorsHash) {
		return fmt.Errorf("%w: %s: validators_hash %X is not the next_validators_hash %X of height %d", ErrBadTrust, where,
			sh.ValidatorsHash, prev.Header.NextValidatorsHash, prev.From)
	}
	if err := c.Validators.VerifyCommitLight(t.ChainID, sh.Commit.BlockID, sh.Height, sh.Commit); err != nil {
		return fmt.Errorf("%w: %s: header not signed by +2/3 of its validator set: %v", ErrBadTrust, where, err)
	}
	if err := prev.Validators.VerifyCommitLightTrusting(t.ChainID, sh.Commit, CheckpointTrustLevel); err != nil {
		return fmt.Errorf("%w: %s: header not signed by +1/3 of the validator set before it (%s): %v", ErrBadTrust, where, prev.name(), err)
	}
	return nil
}

// name says which set a period is, for messages.
func (p trustPeriod) name() string {
	if p.Index > 0 {
		return fmt.Sprintf("checkpoint %d, height %d", p.Index, p.From)
	}
	if p.Header == nil {
		return "the genesis set"
	}
	return fmt.Sprintf("the trusted header's set, height %d", p.From)
}
