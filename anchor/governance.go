package anchor

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
)

// Consortium governance (docs/ledger.md, "Committee governance"): a
// Proposal names one change of membership, of the validator set, of the
// committee or of the regulators; it takes effect in the block where the
// K-th distinct committee member's approval lands, at or before its
// deadline height.
const (
	TypeProposal = "Proposal"
	TypeApproval = "Approval"
)

// Proposal kinds.
const (
	KindAddGateway        = "add-gateway"
	KindRemoveGateway     = "remove-gateway"
	KindAddValidator      = "add-validator"
	KindRemoveValidator   = "remove-validator"
	KindSetValidatorPower = "set-validator-power"
	KindSetCommittee      = "set-committee"
	KindSetRegulators     = "set-regulators"
)

// ProposalKinds lists every kind, in documentation order.
var ProposalKinds = []string{KindAddGateway, KindRemoveGateway, KindAddValidator, KindRemoveValidator,
	KindSetValidatorPower, KindSetCommittee, KindSetRegulators}

// Bounds of governance bodies.
const (
	// MaxCommittee bounds the committee and the regulator list.
	MaxCommittee = 64
	// MaxValidatorPower bounds one validator's voting power.
	MaxValidatorPower = 1_000_000
)

// ProposalBody proposes one change. Action is the kind's own JSON object:
//
//	add-gateway          {"did","pub","site","name"[,"succeeds"]} (GatewayAction)
//	remove-gateway       {"did"}                        (GatewayRefAction)
//	add-validator        {"pub","power","name"}         (ValidatorAction; pub: 32-byte ed25519, base64)
//	remove-validator     {"pub"}                        (ValidatorRefAction)
//	set-validator-power  {"pub","power","name"}         (ValidatorAction; name "")
//	set-committee        {"members","threshold"}        (Committee)
//	set-regulators       {"regulators"}                 (RegulatorsAction)
//
// Deadline is a block height: approvals in blocks up to and including it
// count, later ones are refused. The proposal's ID is SM3 of its body bytes.
type ProposalBody struct {
	Type     string          `json:"type"`
	Kind     string          `json:"kind"`
	Action   json.RawMessage `json:"action"`
	Deadline int64           `json:"deadline"`
	TS       string          `json:"ts"`

	action any // the decoded action, set by validate
}

// ApprovalBody approves the proposal whose ID (SM3 of the proposal body, hex)
// is Proposal. Signed by a committee member.
type ApprovalBody struct {
	Type     string `json:"type"`
	Proposal Hash   `json:"proposal"`
	TS       string `json:"ts"`
}

// GatewayAction admits a gateway (add-gateway). With Succeeds it admits a
// new key of an existing gateway (key rotation): the new DID continues the
// predecessor's batch chain and serves its devices, and the predecessor may
// no longer anchor (docs/ledger.md, "Gateway key rotation").
type GatewayAction struct {
	DID      device.DID `json:"did"`
	Pub      []byte     `json:"pub"` // SPKI DER
	Site     string     `json:"site"`
	Name     string     `json:"name"`
	Succeeds device.DID `json:"succeeds,omitempty"`
}

// GatewayRefAction names a gateway (remove-gateway).
type GatewayRefAction struct {
	DID device.DID `json:"did"`
}

// ValidatorAction adds a validator or sets its power.
type ValidatorAction struct {
	Pub   []byte `json:"pub"` // ed25519 public key, 32 bytes
	Power int64  `json:"power"`
	Name  string `json:"name"`
}

// ValidatorRefAction names a validator (remove-validator).
type ValidatorRefAction struct {
	Pub []byte `json:"pub"`
}

// Committee is the governing committee: members' SM2 public keys (SPKI DER)
// and the number K of distinct members' approvals a proposal needs.
type Committee struct {
	Members   [][]byte `json:"members"`
	Threshold int      `json:"threshold"`
}

// RegulatorsAction replaces the regulator list (set-regulators).
type RegulatorsAction struct {
	Regulators [][]byte `json:"regulators"`
}

// NewProposalBody returns the body bytes of a proposal of kind with action
// (one of the *Action types or *Committee), valid until block deadline.
func NewProposalBody(kind string, action any, deadline int64, ts time.Time) ([]byte, error) {
	raw, err := json.Marshal(action)
	if err != nil {
		return nil, fmt.Errorf("anchor: encode action: %w", err)
	}
	return encodeBody(&ProposalBody{Type: TypeProposal, Kind: kind, Action: raw, Deadline: deadline, TS: FormatTime(ts)})
}

// NewApprovalBody returns the body bytes a committee member signs to approve
// proposal id.
func NewApprovalBody(id Hash, ts time.Time) ([]byte, error) {
	return encodeBody(&ApprovalBody{Type: TypeApproval, Proposal: id, TS: FormatTime(ts)})
}

// NewGatewayAction is the add-gateway action of the gateway with key pub.
func NewGatewayAction(pub *ecdsa.PublicKey, site, name string) (*GatewayAction, error) {
	der, err := device.MarshalPublicKeyDER(pub)
	if err != nil {
		return nil, err
	}
	a := &GatewayAction{DID: device.DIDFromPublicKey(pub), Pub: der, Site: site, Name: name}
	return a, a.validate()
}

// ProposalID is the ID of a proposal: SM3 of its body bytes.
func ProposalID(body []byte) Hash { return SM3(body) }

// DecodedAction returns the proposal's decoded action (valid after
// DecodeBody succeeded): *GatewayAction, *GatewayRefAction,
// *ValidatorAction, *ValidatorRefAction, *Committee or *RegulatorsAction.
func (b *ProposalBody) DecodedAction() any { return b.action }

func (b *ProposalBody) validate() error {
	if b.Type != TypeProposal {
		return fmt.Errorf("%w: type %q", ErrMalformedTx, b.Type)
	}
	if b.Deadline < 1 {
		return fmt.Errorf("%w: Proposal deadline %d (want a block height ≥ 1)", ErrMalformedTx, b.Deadline)
	}
	act, err := DecodeAction(b.Kind, b.Action)
	if err != nil {
		return err
	}
	b.action = act
	return checkTS(b.TS)
}

// DecodeAction decodes a proposal action of kind strictly and checks it.
func DecodeAction(kind string, raw []byte) (any, error) {
	var v interface{ validate() error }
	switch kind {
	case KindAddGateway:
		v = &GatewayAction{}
	case KindRemoveGateway:
		v = &GatewayRefAction{}
	case KindAddValidator, KindSetValidatorPower:
		v = &ValidatorAction{}
	case KindRemoveValidator:
		v = &ValidatorRefAction{}
	case KindSetCommittee:
		v = &Committee{}
	case KindSetRegulators:
		v = &RegulatorsAction{}
	default:
		return nil, fmt.Errorf("%w: Proposal kind %q (want one of %s)", ErrMalformedTx, kind, strings.Join(ProposalKinds, ", "))
	}
	if len(raw) == 0 || raw[0] != '{' {
		return nil, fmt.Errorf("%w: Proposal action is not a JSON object", ErrMalformedTx)
	}
	if err := decodeStrict(raw, v); err != nil {
		return nil, fmt.Errorf("%w: %s action: %v", ErrMalformedTx, kind, err)
	}
	if err := v.validate(); err != nil {
		return nil, err
	}
	if va, ok := v.(*ValidatorAction); ok && kind == KindSetValidatorPower && va.Name != "" {
		return nil, fmt.Errorf("%w: set-validator-power takes no name", ErrMalformedTx)
	}
	return v, nil
}

func (b *ApprovalBody) validate() error {
	if b.Type != TypeApproval {
		return fmt.Errorf("%w: type %q", ErrMalformedTx, b.Type)
	}
	if b.Proposal.IsZero() {
		return fmt.Errorf("%w: Approval proposal is zero", ErrMalformedTx)
	}
	return checkTS(b.TS)
}

func (a *GatewayAction) validate() error {
	pub, err := device.ParsePublicKeyDER(a.Pub)
	if err != nil {
		return fmt.Errorf("%w: gateway pub: %v", ErrMalformedTx, err)
	}
	if !a.DID.Matches(pub) {
		return fmt.Errorf("%w: gateway did %s is not the DID of pub (%s)", ErrMalformedTx, a.DID, device.DIDFromPublicKey(pub))
	}
	if err := checkText("site", a.Site, true); err != nil {
		return err
	}
	if a.Succeeds != "" {
		if _, err := device.ParseDID(string(a.Succeeds)); err != nil {
			return fmt.Errorf("%w: gateway succeeds: %v", ErrMalformedTx, err)
		}
		if a.Succeeds == a.DID {
			return fmt.Errorf("%w: gateway %s cannot succeed itself", ErrMalformedTx, a.DID)
		}
	}
	return checkText("name", a.Name, true)
}

// PublicKey parses the gateway's key (valid after validation).
func (a *GatewayAction) PublicKey() (*ecdsa.PublicKey, error) { return device.ParsePublicKeyDER(a.Pub) }

func (a *GatewayRefAction) validate() error {
	if _, err := device.ParseDID(string(a.DID)); err != nil {
		return fmt.Errorf("%w: gateway did: %v", ErrMalformedTx, err)
	}
	return nil
}

func (a *ValidatorAction) validate() error {
	if len(a.Pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: validator pub is %d bytes (want a %d-byte ed25519 key)", ErrMalformedTx, len(a.Pub), ed25519.PublicKeySize)
	}
	if a.Power < 1 || a.Power > MaxValidatorPower {
		return fmt.Errorf("%w: validator power %d (want 1 to %d)", ErrMalformedTx, a.Power, MaxValidatorPower)
	}
	return checkText("name", a.Name, false)
}

func (a *ValidatorRefAction) validate() error {
	if len(a.Pub) != ed25519.PublicKeySize {
		return fmt.Errorf("%w: validator pub is %d bytes (want a %d-byte ed25519 key)", ErrMalformedTx, len(a.Pub), ed25519.PublicKeySize)
	}
	return nil
}

func (c *Committee) validate() error {
	if len(c.Members) == 0 || len(c.Members) > MaxCommittee {
		return fmt.Errorf("%w: committee of %d members (want 1 to %d)", ErrMalformedTx, len(c.Members), MaxCommittee)
	}
	if err := checkKeyList("committee member", c.Members); err != nil {
		return err
	}
	if c.Threshold < 1 || c.Threshold > len(c.Members) {
		return fmt.Errorf("%w: committee threshold %d of %d members (want 1 ≤ K ≤ N)", ErrMalformedTx, c.Threshold, len(c.Members))
	}
	return nil
}

func (r *RegulatorsAction) validate() error {
	if r.Regulators == nil {
		return fmt.Errorf("%w: regulators is required (an empty list removes every regulator)", ErrMalformedTx)
	}
	if len(r.Regulators) > MaxCommittee {
		return fmt.Errorf("%w: %d regulators (want at most %d)", ErrMalformedTx, len(r.Regulators), MaxCommittee)
	}
	return checkKeyList("regulator", r.Regulators)
}

// checkKeyList checks SPKI DER SM2 keys with distinct DIDs.
func checkKeyList(what string, keys [][]byte) error {
	seen := map[device.DID]bool{}
	for i, k := range keys {
		pub, err := device.ParsePublicKeyDER(k)
		if err != nil {
			return fmt.Errorf("%w: %s %d: %v", ErrMalformedTx, what, i, err)
		}
		did := device.DIDFromPublicKey(pub)
		if seen[did] {
			return fmt.Errorf("%w: %s %s listed twice", ErrMalformedTx, what, did)
		}
		seen[did] = true
	}
	return nil
}

// ProposalRecord is the ledger's answer for /proposal/{id} and the record
// it stores. Status is "open", "executed" or (in answers only, once the
// committed height is past the deadline) "expired".
type ProposalRecord struct {
	ID             Hash            `json:"id"`
	Kind           string          `json:"kind"`
	Action         json.RawMessage `json:"action"`
	Deadline       int64           `json:"deadline"`
	Proposer       device.DID      `json:"proposer"`
	Height         int64           `json:"height"`
	Tx             string          `json:"tx"`
	Approvals      []device.DID    `json:"approvals"`
	Status         string          `json:"status"`
	ExecutedHeight int64           `json:"executed_height,omitempty"`
	ExecutedTx     string          `json:"executed_tx,omitempty"`
}

// KeyEntry is a committee member or regulator in query answers.
type KeyEntry struct {
	DID device.DID `json:"did"`
	Pub []byte     `json:"pub"`
}

// CommitteeRecord is the ledger's answer for /committee: the committee, its
// threshold and the regulators, as the last committed block left them.
type CommitteeRecord struct {
	Members    []KeyEntry `json:"members"`
	Threshold  int        `json:"threshold"`
	Regulators []KeyEntry `json:"regulators"`
}

// ValidatorRecord is one validator in the ledger's /validators answer: the
// set as the application last changed it (CometBFT applies a change two
// blocks after the block that made it).
type ValidatorRecord struct {
	Pub     []byte `json:"pub"`     // ed25519, 32 bytes
	Address string `json:"address"` // CometBFT address, upper-case hex
	Power   int64  `json:"power"`
	Name    string `json:"name"`
	Height  int64  `json:"height"` // block that set it (0: genesis)
}
