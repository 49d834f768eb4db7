package evidence

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	cmtjson "github.com/cometbft/cometbft/libs/json"
	"github.com/cometbft/cometbft/types"
)

// TrustVersion is the version of the trust file format written by this package.
const TrustVersion = 1

// Trust modes: what the regulator decided to trust.
const (
	// TrustModeHeader trusts one signed header (at Height, hash HeaderHash) and
	// the validator set that signed it. A header at another height is
	// accepted when +2/3 of exactly that set (or of the checkpoint's set that
	// covers its height) signed it; one above the trusted header only within
	// the trusting period from the trusted header's time.
	TrustModeHeader = "header"
	// TrustModeGenesis trusts the genesis validator set of ChainID and no
	// header: a header is accepted when its validator set is exactly the
	// trusted set (the header's validators_hash is the trusted set's hash)
	// and +2/3 of that set signed it.
	TrustModeGenesis = "genesis"
)

// DefaultTrustingPeriod is how long a trusted header stays usable for light
// client verification. Consortium validators are named organisations, not
// bonded stake that can be withdrawn, and proofs are evidence checked years
// after the fact, so the period is long (20 years); a regulator who wants a
// shorter one edits the trust file.
const DefaultTrustingPeriod = 20 * 365 * 24 * time.Hour

// DefaultMaxClockDrift is how far in the future (relative to the verifier's
// clock) a header's time may be.
const DefaultMaxClockDrift = 10 * time.Second

// ErrBadTrust means a trust file is malformed or inconsistent (its header is
// not signed by its validator set, or its hash does not match). Export a new
// trust file from a node or a home directory you trust.
var ErrBadTrust = errors.New("anchor: invalid trust")

// TrustMismatchError means the trust file's validator set for Height is not
// the set the chain had there: the block's header, signed by +2/3 of its own
// validator set, names another set (validators_hash). The trust file, or the
// evidence, is of another chain; export the trust file again from a source
// you trust. It wraps ErrBadTrust.
type TrustMismatchError struct {
	Height      int64
	TrustedHash []byte   // the trust file's set for Height (ValidatorSet.Hash)
	ChainHash   []byte   // the header's validators_hash
	Diff        []string // what differs, when the block's set is known
	// Since is the height from which the trust file's set holds (its last
	// checkpoint's, or the trusted height; 0 for the genesis set) when
	// Height is in the trust file's last range: the chain's set may have
	// changed after the trust file was last brought up to date.
	Since int64
	Last  bool
}

func (e *TrustMismatchError) Error() string {
	msg := fmt.Sprintf("the trust file's validator set (hash %X) is not the set of block %d (validators_hash %X)",
		e.TrustedHash, e.Height, e.ChainHash)
	if len(e.Diff) > 0 {
		msg += ": " + strings.Join(e.Diff, "; ")
	}
	if e.Last {
		msg += fmt.Sprintf("; the trust file follows the validator set from height %d on: if the consortium changed its validators after that, add checkpoints with 'edgeanchor ledger trust update'", e.Since)
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrBadTrust) hold.
func (e *TrustMismatchError) Unwrap() error { return ErrBadTrust }

// checkTrustedSet checks that the trust's set for the height of sh (the
// set of the last checkpoint at or below it, else the base set: the
// genesis set, or the trusted header's, which also stands for heights
// below the trusted header) is exactly the set sh names (validators_hash, CometBFT's
// ValidatorSet.Hash). vals is the set the evidence gives for sh; when it is
// the header's, the error lists how the trusted set differs from it.
func checkTrustedSet(trust *Trust, sh *types.SignedHeader, vals *types.ValidatorSet) error {
	p := trust.periodAt(sh.Height)
	trusted := p.Validators
	th := trusted.Hash()
	if bytes.Equal(th, sh.ValidatorsHash) {
		return nil
	}
	e := &TrustMismatchError{Height: sh.Height, TrustedHash: th, ChainHash: sh.ValidatorsHash,
		Since: p.From, Last: p.Index == len(trust.Checkpoints) && sh.Height >= p.From}
	if vals != nil && bytes.Equal(vals.Hash(), sh.ValidatorsHash) {
		e.Diff = diffValidators(trusted, vals)
	}
	return e
}

// diffValidators says how the trusted set differs from the chain's.
func diffValidators(trusted, chain *types.ValidatorSet) []string {
	var out []string
	for _, v := range trusted.Validators {
		_, cv := chain.GetByAddress(v.Address)
		switch {
		case cv == nil:
			out = append(out, fmt.Sprintf("validator %X (power %d) is in the trust file but not in the chain's set", v.Address, v.VotingPower))
		case !cv.PubKey.Equals(v.PubKey):
			out = append(out, fmt.Sprintf("validator %X has another public key in the trust file", v.Address))
		case cv.VotingPower != v.VotingPower:
			out = append(out, fmt.Sprintf("validator %X has power %d in the trust file, %d on the chain", v.Address, v.VotingPower, cv.VotingPower))
		}
	}
	for _, cv := range chain.Validators {
		if _, v := trusted.GetByAddress(cv.Address); v == nil {
			out = append(out, fmt.Sprintf("the chain's validator %X (power %d) is missing from the trust file", cv.Address, cv.VotingPower))
		}
	}
	if len(out) == 0 {
		out = append(out, "the same validators, listed in another order than the chain's (by power, then address)")
	}
	return out
}

// Trust is what a regulator keeps to verify anchor proofs offline: the
// ledger's chain id and the validator set (and, in header mode, one signed
// header) it trusts. Its JSON form is the trust file.
type Trust struct {
	Version        int                 // TrustVersion
	Mode           string              // TrustModeHeader or TrustModeGenesis
	ChainID        string              // CometBFT chain id
	Height         int64               // trusted height; 0 in genesis mode
	HeaderHash     []byte              // hash of the trusted header; nil in genesis mode
	Header         *types.SignedHeader // the trusted signed header; nil in genesis mode
	Validators     *types.ValidatorSet // validator set at Height (genesis set in genesis mode)
	TrustingPeriod time.Duration       // see DefaultTrustingPeriod
	Exported       time.Time           // when the file was made (informational)
	// Checkpoints follow the validator set after the base (the genesis set
	// or the trusted header): each is the signed header at the first
	// height of a new set, verified from the one before (Checkpoint).
	Checkpoints []Checkpoint
}

type trustJSON struct {
	Version        int             `json:"version"`
	Mode           string          `json:"mode"`
	ChainID        string          `json:"chain_id"`
	Height         int64           `json:"height"`
	HeaderHash     string          `json:"header_hash,omitempty"`
	TrustingPeriod string          `json:"trusting_period"`
	Exported       string          `json:"exported,omitempty"`
	Header         json.RawMessage `json:"signed_header,omitempty"`
	Validators     json.RawMessage `json:"validators"`
	Checkpoints    []Checkpoint    `json:"checkpoints,omitempty"`
}

// MarshalJSON writes the trust file form: plain members, with the signed
// header and validator set in CometBFT's own JSON encoding (as its RPC shows
// them).
func (t *Trust) MarshalJSON() ([]byte, error) {
	w := trustJSON{
		Version:        t.Version,
		Mode:           t.Mode,
		ChainID:        t.ChainID,
		Height:         t.Height,
		HeaderHash:     hex.EncodeToString(t.HeaderHash),
		TrustingPeriod: t.TrustingPeriod.String(),
		Checkpoints:    t.Checkpoints,
	}
	if !t.Exported.IsZero() {
		w.Exported = t.Exported.UTC().Format(time.RFC3339)
	}
	if t.Header != nil {
		b, err := cmtjson.Marshal(t.Header)
		if err != nil {
			return nil, fmt.Errorf("anchor: encode trusted header: %w", err)
		}
		w.Header = b
	}
	b, err := cmtjson.Marshal(t.Validators)
	if err != nil {
		return nil, fmt.Errorf("anchor: encode validators: %w", err)
	}
	w.Validators = b
	return json.Marshal(w)
}

// UnmarshalJSON reads the trust file form. It checks the form only; call
// Validate before relying on it.
func (t *Trust) UnmarshalJSON(data []byte) (err error) {
	defer func() { // CometBFT's JSON decoder panics on some inputs
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrBadTrust, r)
		}
	}()
	var w trustJSON
	if err := json.Unmarshal(data, &w); err != nil {
		return fmt.Errorf("%w: %v", ErrBadTrust, err)
	}
	out := Trust{Version: w.Version, Mode: w.Mode, ChainID: w.ChainID, Height: w.Height, Checkpoints: w.Checkpoints}
	if w.HeaderHash != "" {
		h, err := hex.DecodeString(w.HeaderHash)
		if err != nil {
			return fmt.Errorf("%w: header_hash: %v", ErrBadTrust, err)
		}
		out.HeaderHash = h
	}
	if w.TrustingPeriod != "" {
		d, err := time.ParseDuration(w.TrustingPeriod)
		if err != nil {
			return fmt.Errorf("%w: trusting_period: %v", ErrBadTrust, err)
		}
		out.TrustingPeriod = d
	}
	if w.Exported != "" {
		ts, err := time.Parse(time.RFC3339, w.Exported)
		if err != nil {
			return fmt.Errorf("%w: exported: %v", ErrBadTrust, err)
		}
		out.Exported = ts
	}
	if len(w.Header) > 0 && string(w.Header) != "null" {
		var sh types.SignedHeader
		if err := cmtjson.Unmarshal(w.Header, &sh); err != nil {
			return fmt.Errorf("%w: signed_header: %v", ErrBadTrust, err)
		}
		out.Header = &sh
	}
	if len(w.Validators) > 0 && string(w.Validators) != "null" {
		var vs types.ValidatorSet
		if err := cmtjson.Unmarshal(w.Validators, &vs); err != nil {
			return fmt.Errorf("%w: validators: %v", ErrBadTrust, err)
		}
		out.Validators = &vs
	}
	*t = out
	return nil
}

// Validate checks that the trust is complete and self-consistent: in header
// mode, the header hashes to HeaderHash, belongs to ChainID and is signed by
// +2/3 of Validators.
func (t *Trust) Validate() (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrBadTrust, r)
		}
	}()
	if t.Version != TrustVersion {
		return fmt.Errorf("%w: version %d (want %d)", ErrBadTrust, t.Version, TrustVersion)
	}
	if t.ChainID == "" {
		return fmt.Errorf("%w: empty chain_id", ErrBadTrust)
	}
	if t.TrustingPeriod <= 0 {
		return fmt.Errorf("%w: trusting_period must be positive", ErrBadTrust)
	}
	if err := t.Validators.ValidateBasic(); err != nil {
		return fmt.Errorf("%w: validators: %v", ErrBadTrust, err)
	}
	switch t.Mode {
	case TrustModeGenesis:
		if t.Header != nil || t.Height != 0 || len(t.HeaderHash) != 0 {
			return fmt.Errorf("%w: genesis mode carries no header or height", ErrBadTrust)
		}
		return t.validateCheckpoints()
	case TrustModeHeader:
	default:
		return fmt.Errorf("%w: mode %q (want %q or %q)", ErrBadTrust, t.Mode, TrustModeHeader, TrustModeGenesis)
	}
	sh := t.Header
	if sh == nil || sh.Header == nil || sh.Commit == nil {
		return fmt.Errorf("%w: header mode needs signed_header", ErrBadTrust)
	}
	if err := sh.ValidateBasic(t.ChainID); err != nil {
		return fmt.Errorf("%w: signed_header: %v", ErrBadTrust, err)
	}
	if sh.Height != t.Height {
		return fmt.Errorf("%w: height %d but header height %d", ErrBadTrust, t.Height, sh.Height)
	}
	if !bytes.Equal(sh.Hash(), t.HeaderHash) {
		return fmt.Errorf("%w: header_hash %X does not match header %X", ErrBadTrust, t.HeaderHash, sh.Hash())
	}
	if !bytes.Equal(sh.ValidatorsHash, t.Validators.Hash()) {
		return fmt.Errorf("%w: validator set is not the header's", ErrBadTrust)
	}
	if err := t.Validators.VerifyCommitLight(t.ChainID, sh.Commit.BlockID, sh.Height, sh.Commit); err != nil {
		return fmt.Errorf("%w: header not signed by its validators: %v", ErrBadTrust, err)
	}
	return t.validateCheckpoints()
}

// WriteTrustFile writes t as indented JSON to path (mode 0644: a trust file
// is public; its integrity is what matters).
func WriteTrustFile(path string, t *Trust) error {
	if err := t.Validate(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(t, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// ReadTrustFile reads and validates a trust file.
func ReadTrustFile(path string) (*Trust, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("anchor: read trust: %w", err)
	}
	var t Trust
	if err := json.Unmarshal(b, &t); err != nil {
		return nil, err
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return &t, nil
}

// ExportTrustFromHome builds a genesis-mode trust from a node home directory
// (HOME/config/genesis.json): the chain id and genesis validator set. It needs
// no running node. Prefer ExportTrust against a node once the chain runs: a
// header-mode trust also pins the chain's history up to its height.
func ExportTrustFromHome(home string) (*Trust, error) {
	gen, err := types.GenesisDocFromFile(filepath.Join(home, "config", "genesis.json"))
	if err != nil {
		return nil, fmt.Errorf("anchor: export trust: %w", err)
	}
	if err := gen.ValidateAndComplete(); err != nil {
		return nil, fmt.Errorf("anchor: export trust: genesis: %w", err)
	}
	if len(gen.Validators) == 0 {
		return nil, fmt.Errorf("%w: genesis has no validators", ErrBadTrust)
	}
	vals := make([]*types.Validator, len(gen.Validators))
	for i, gv := range gen.Validators {
		vals[i] = types.NewValidator(gv.PubKey, gv.Power)
	}
	t := &Trust{
		Version:        TrustVersion,
		Mode:           TrustModeGenesis,
		ChainID:        gen.ChainID,
		Validators:     types.NewValidatorSet(vals),
		TrustingPeriod: DefaultTrustingPeriod,
		Exported:       time.Now().UTC(),
	}
	if err := t.Validate(); err != nil {
		return nil, err
	}
	return t, nil
}
