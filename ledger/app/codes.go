package app

// Code is an ABCI result code of the ledger application. 0 is success; every
// other code is a refusal with one meaning, listed in docs/ledger.md. Codes
// are part of the protocol: never renumber one, only add new ones.
type Code uint32

// Codespace is the ABCI codespace of every refusal.
const Codespace = "edgeanchor"

// Result codes.
const (
	CodeOK                  Code = 0
	CodeMalformed           Code = 1  // bytes are not a ledger tx, or its body is malformed
	CodeUnknownType         Code = 2  // the body's type is not one the ledger knows
	CodeBadSignature        Code = 3  // the tx signature does not verify under the signer's key
	CodeWrongSigner         Code = 4  // the signer may not submit this tx
	CodeNotMember           Code = 5  // the gateway is not a current consortium member
	CodeDuplicate           Code = 6  // a body with the same SM3 hash was applied before
	CodeGatewayExists       Code = 7  // add-gateway for a current member
	CodeGatewayUnknown      Code = 8  // remove-gateway for a gateway that is not a member
	CodeDeviceSigMissing    Code = 9  // RegisterDevice without the device's signature
	CodeDeviceSigInvalid    Code = 10 // the device's signature does not verify over the registration
	CodeRegistrationInvalid Code = 11 // the device registration body is malformed
	CodeWrongSite           Code = 12 // the registration's site is not the gateway's site
	CodeDeviceExists        Code = 13 // the device (DID) is already registered, or was revoked
	CodeDeviceUnknown       Code = 14 // RevokeDevice for a device never registered
	CodeDeviceRevoked       Code = 15 // RevokeDevice for a device already revoked
	CodeSequenceGap         Code = 16 // AnchorBatch seq is not the gateway's last + 1
	CodeWrongPrev           Code = 17 // AnchorBatch prev is not the hash of the gateway's last header
	CodeRecordGap           Code = 18 // AnchorBatch first is not the previous batch's last + 1
	CodeNotFound            Code = 19 // query: no such device, gateway or batch
	CodeBadQuery            Code = 20 // query: unknown path or malformed argument
	CodeNotCommittee        Code = 21 // Approval signed by a key that is not a committee member
	CodeAlreadyApproved     Code = 22 // a second Approval of one proposal by the same member
	CodeProposalExpired     Code = 23 // Approval (or Proposal) in a block past the proposal's deadline
	CodeProposalUnknown     Code = 24 // Approval of a proposal the ledger does not hold
	CodeProposalExecuted    Code = 25 // Approval of a proposal that already took effect
	CodeValidatorExists     Code = 26 // add-validator for a current validator
	CodeValidatorUnknown    Code = 27 // remove-validator or set-validator-power for a key that is not a validator
	CodeValidatorSetEmpty   Code = 28 // remove-validator of the last validator
	CodePredecessorUnknown  Code = 29 // add-gateway --succeeds names a gateway that is not a current member
	CodeGatewaySucceeded    Code = 30 // the gateway's key was succeeded by another: it may not anchor, register, revoke, rejoin or be succeeded again
	CodeSuccessorExists     Code = 31 // add-gateway --succeeds with a DID the ledger already knows
	CodePredecessorEmpty    Code = 32 // add-gateway --succeeds names a gateway that has anchored no batch yet
)

var codeInfo = map[Code]struct{ name, msg string }{
	CodeOK:                  {"ok", "ok"},
	CodeMalformed:           {"malformed", "malformed transaction"},
	CodeUnknownType:         {"unknown_type", "unknown transaction type"},
	CodeBadSignature:        {"bad_signature", "signature does not verify under the signer's key"},
	CodeWrongSigner:         {"wrong_signer", "signer is not allowed to submit this transaction"},
	CodeNotMember:           {"not_member", "gateway is not a consortium member"},
	CodeDuplicate:           {"duplicate", "transaction body was already applied"},
	CodeGatewayExists:       {"gateway_exists", "gateway is already a member"},
	CodeGatewayUnknown:      {"gateway_unknown", "gateway is not a member"},
	CodeDeviceSigMissing:    {"device_sig_missing", "device signature over the registration is missing"},
	CodeDeviceSigInvalid:    {"device_sig_invalid", "device signature over the registration does not verify"},
	CodeRegistrationInvalid: {"registration_invalid", "device registration is malformed"},
	CodeWrongSite:           {"wrong_site", "device site is not the gateway's site"},
	CodeDeviceExists:        {"device_exists", "device is already registered"},
	CodeDeviceUnknown:       {"device_unknown", "device is not registered"},
	CodeDeviceRevoked:       {"device_revoked", "device is already revoked"},
	CodeSequenceGap:         {"sequence_gap", "batch sequence does not follow the gateway's last batch"},
	CodeWrongPrev:           {"wrong_prev", "previous header hash is not the hash of the gateway's last header"},
	CodeRecordGap:           {"record_gap", "first record does not follow the previous batch's last record"},
	CodeNotFound:            {"not_found", "not found"},
	CodeBadQuery:            {"bad_query", "unknown query path or malformed argument"},
	CodeNotCommittee:        {"not_committee", "signer is not a committee member"},
	CodeAlreadyApproved:     {"already_approved", "this committee member already approved the proposal"},
	CodeProposalExpired:     {"proposal_expired", "the proposal's deadline height has passed"},
	CodeProposalUnknown:     {"proposal_unknown", "no such proposal on the ledger"},
	CodeProposalExecuted:    {"proposal_executed", "the proposal already took effect"},
	CodeValidatorExists:     {"validator_exists", "the key is already a validator"},
	CodeValidatorUnknown:    {"validator_unknown", "the key is not a validator"},
	CodeValidatorSetEmpty:   {"validator_set_empty", "the change would leave no validator"},
	CodePredecessorUnknown:  {"predecessor_unknown", "the gateway to succeed is not a current member"},
	CodeGatewaySucceeded:    {"gateway_succeeded", "the gateway's key was succeeded by another key"},
	CodeSuccessorExists:     {"successor_exists", "a successor must be a new gateway key"},
	CodePredecessorEmpty:    {"predecessor_empty", "the gateway to succeed has anchored no batch yet"},
}

// Name is the code's short snake_case name (the metric label).
func (c Code) Name() string {
	if i, ok := codeInfo[c]; ok {
		return i.name
	}
	return "unknown"
}

// Message is the code's human-readable meaning.
func (c Code) Message() string {
	if i, ok := codeInfo[c]; ok {
		return i.msg
	}
	return "unknown code"
}

// Codes lists every code in numeric order (for docs and tests).
func Codes() []Code {
	out := make([]Code, 0, len(codeInfo))
	for c := Code(0); int(c) < 64; c++ {
		if _, ok := codeInfo[c]; ok {
			out = append(out, c)
		}
	}
	return out
}

// refusal is a validation failure: a code and a detail for the ABCI log.
type refusal struct {
	code   Code
	detail string
}

func (r *refusal) Error() string {
	if r.detail == "" {
		return r.code.Message()
	}
	return r.code.Message() + ": " + r.detail
}

func refuse(c Code, detail string) *refusal { return &refusal{code: c, detail: detail} }
