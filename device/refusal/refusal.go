// Package refusal is the one table of the reasons a gateway refuses a
// device: each reason's name (the MQTT 5 reason string, the log's "reason"
// and the metrics' label value), the MQTT 5 reason code it is answered with,
// whether the device may send the same thing again later, and a one-line
// meaning. The broker, the gateway's ingest pipeline and enroller, the
// metrics' label initialisation and the simulated devices all read it, and
// a test ties docs/protocol.md's refusal tables to it. The package imports
// nothing.
package refusal

import "slices"

// Stage is where a refusal happens; each stage has its own set of reasons
// (a name may appear in several stages, with its own code in each).
type Stage uint8

const (
	// Admit: a CONNECT refused before its credential is read (CONNACK),
	// counted in edgeanchor_mqtt_connections_refused_total and
	// edgeanchor_mqtt_connect_throttled_total.
	Admit Stage = iota + 1
	// Connect: a connect credential or a site application account refused
	// (CONNACK), counted in edgeanchor_auth_failures_total{reason}.
	Connect
	// Enroll: an enrollment credential refused (CONNACK), counted in
	// edgeanchor_enrollments_total{result}.
	Enroll
	// Publish: a publish refused (PUBACK or PUBREC), counted in
	// edgeanchor_messages_refused_total{reason}.
	Publish
)

func (s Stage) String() string {
	switch s {
	case Admit:
		return "admit"
	case Connect:
		return "connect"
	case Enroll:
		return "enroll"
	case Publish:
		return "publish"
	}
	return "unknown"
}

// MQTT 5 reason codes a refusal is answered with (MQTT 5.0, 2.4).
const (
	CodeUnspecified            byte = 0x80
	CodeImplementationSpecific byte = 0x83
	CodeNotAuthorized          byte = 0x87
	CodeServerBusy             byte = 0x89
	CodeQuotaExceeded          byte = 0x97
	CodePayloadFormatInvalid   byte = 0x99
	CodeConnectionRateExceeded byte = 0x9F
)

// Reason names.
const (
	// Admit.
	MaxConnections   = "max_connections"
	ConnectThrottled = "connect_throttled"

	// Connect (and, some of them, Enroll and Publish).
	Malformed        = "malformed"
	ClientIDMismatch = "client_id_mismatch"
	UnknownDevice    = "unknown_device"
	Revoked          = "revoked"
	Stale            = "stale"
	BadSignature     = "bad_signature"
	Replayed         = "replayed"
	UnknownAccount   = "unknown_account"
	BadPassword      = "bad_password"

	// Enroll.
	EnrollmentDisabled = "enrollment_disabled"
	EnrollError        = "enroll_error"
	TokenUnknown       = "token_unknown"
	TokenUsed          = "token_used"
	TokenExpired       = "token_expired"
	TokenWrongSite     = "token_wrong_site"
	TokenWrongKind     = "token_wrong_kind"
	LedgerRefused      = "ledger_refused"
	LedgerUnavailable  = "ledger_unavailable"

	// Publish.
	Version          = "version"
	Algorithm        = "algorithm"
	Timestamp        = "timestamp"
	FutureTimestamp  = "future_timestamp"
	TooLarge         = "too_large"
	Schema           = "schema"
	KindNotAllowed   = "kind_not_allowed"
	DIDMismatch      = "did_mismatch"
	Signature        = "signature"
	ForeignTopic     = "foreign_topic"
	Replay           = "replay"
	RateLimited      = "rate_limited"
	InFlightExceeded = "inflight_exceeded"
	StoreError       = "store_error"
	DiskFull         = "disk_full"
)

// Reason is one row of the table.
type Reason struct {
	Name  string
	Stage Stage
	// Code is the MQTT 5 reason code of the CONNACK (Admit, Connect,
	// Enroll) or of the PUBACK/PUBREC (Publish).
	Code byte
	// Retry says the device may send the same reading or credential again
	// later, unchanged, and expect it to be taken once the gateway's
	// condition clears; otherwise something on the device (or its
	// registration) must change first.
	Retry bool
	// Meaning says in one line when the reason is given.
	Meaning string
}

var table = []Reason{
	{MaxConnections, Admit, CodeServerBusy, true, "the gateway holds limits.max_connections connections"},
	{ConnectThrottled, Admit, CodeConnectionRateExceeded, true, "the source address has spent its budget of failed authentications"},

	{Malformed, Connect, CodeNotAuthorized, false, "username is not a DID, or the password is not a connect credential"},
	{ClientIDMismatch, Connect, CodeNotAuthorized, false, "client ID differs from the username"},
	{UnknownDevice, Connect, CodeNotAuthorized, false, "the DID is not registered to this gateway's site"},
	{Revoked, Connect, CodeNotAuthorized, false, "the device is revoked on the ledger"},
	{Stale, Connect, CodeNotAuthorized, false, "the credential's time is outside the credential window around the gateway's clock"},
	{BadSignature, Connect, CodeNotAuthorized, false, "the credential's signature does not verify with the registered key"},
	{Replayed, Connect, CodeNotAuthorized, false, "the credential's nonce was already used within the window"},
	{UnknownAccount, Connect, CodeNotAuthorized, false, "no site application account of that name"},
	{BadPassword, Connect, CodeNotAuthorized, false, "wrong password for a site application account"},

	{Malformed, Enroll, CodeNotAuthorized, false, "the password or its registration is not well-formed, or the DID is not that of the key"},
	{ClientIDMismatch, Enroll, CodeNotAuthorized, false, "the registration names another DID than the client ID"},
	{BadSignature, Enroll, CodeNotAuthorized, false, "the signature over the registration does not verify"},
	{Stale, Enroll, CodeNotAuthorized, false, "the registration's ts is outside the credential window"},
	{Replayed, Enroll, CodeNotAuthorized, false, "the registration's nonce was already used within the window"},
	{Revoked, Enroll, CodeNotAuthorized, false, "the device is revoked on the ledger"},
	{TokenUnknown, Enroll, CodeNotAuthorized, false, "no such enrollment token"},
	{TokenUsed, Enroll, CodeNotAuthorized, false, "the token was used by another device"},
	{TokenExpired, Enroll, CodeNotAuthorized, false, "the token has expired"},
	{TokenWrongSite, Enroll, CodeNotAuthorized, false, "the token is for another site"},
	{TokenWrongKind, Enroll, CodeNotAuthorized, false, "the token is for another device kind"},
	{LedgerRefused, Enroll, CodeNotAuthorized, false, "the ledger refused the RegisterDevice transaction; the token is given back"},
	{LedgerUnavailable, Enroll, CodeNotAuthorized, true, "the ledger did not answer; the token stays reserved for this device"},
	{EnrollmentDisabled, Enroll, CodeNotAuthorized, false, "this gateway does not enroll devices"},
	{EnrollError, Enroll, CodeNotAuthorized, true, "the gateway's enroller failed"},

	{Malformed, Publish, CodePayloadFormatInvalid, false, "not the envelope JSON, bad base64, bad body fields, seq 0"},
	{Version, Publish, CodePayloadFormatInvalid, false, "the envelope's v is not 1"},
	{Algorithm, Publish, CodePayloadFormatInvalid, false, "the envelope's alg is not SM2-SM3"},
	{Timestamp, Publish, CodePayloadFormatInvalid, false, "ts is not RFC 3339 UTC"},
	{FutureTimestamp, Publish, CodePayloadFormatInvalid, false, "ts is more than future_tolerance ahead of the gateway's clock"},
	{TooLarge, Publish, CodePayloadFormatInvalid, false, "the payload is over limits.max_payload"},
	{Schema, Publish, CodePayloadFormatInvalid, false, "the data does not fit its record kind"},
	{KindNotAllowed, Publish, CodeNotAuthorized, false, "the record kind is not allowed for the device's kind"},
	{DIDMismatch, Publish, CodeNotAuthorized, false, "the body names another DID"},
	{Signature, Publish, CodeNotAuthorized, false, "the envelope's signature does not verify"},
	{ForeignTopic, Publish, CodeNotAuthorized, false, "a publish outside the device's own up topic"},
	{Revoked, Publish, CodeNotAuthorized, false, "the device was revoked after it connected"},
	{UnknownDevice, Publish, CodeNotAuthorized, false, "the device vanished from the registry"},
	{Replay, Publish, CodeImplementationSpecific, false, "seq is not above the last accepted, not in an open gap, and not a resend of the stored record"},
	{RateLimited, Publish, CodeQuotaExceeded, true, "over the device's rate"},
	{InFlightExceeded, Publish, CodeQuotaExceeded, true, "the gateway's pipeline is full"},
	{StoreError, Publish, CodeUnspecified, true, "the disk write failed; the gateway accepts again once restarted"},
	{DiskFull, Publish, CodeQuotaExceeded, true, "the gateway's disk is below its free-space floor"},
}

// Table returns the reasons of stage s in a stable order (a copy).
func Table(s Stage) []Reason {
	var out []Reason
	for _, r := range table {
		if r.Stage == s {
			out = append(out, r)
		}
	}
	return out
}

// Names returns the reason names of stage s in the order of Table: the
// label values a metric of that stage creates at 0.
func Names(s Stage) []string {
	var out []string
	for _, r := range table {
		if r.Stage == s {
			out = append(out, r.Name)
		}
	}
	return out
}

// Lookup returns the reason name of stage s.
func Lookup(s Stage, name string) (Reason, bool) {
	i := slices.IndexFunc(table, func(r Reason) bool { return r.Stage == s && r.Name == name })
	if i < 0 {
		return Reason{}, false
	}
	return table[i], true
}

// Code returns the MQTT 5 reason code of name at stage s, or
// CodeNotAuthorized for a name the table does not hold.
func Code(s Stage, name string) byte {
	if r, ok := Lookup(s, name); ok {
		return r.Code
	}
	return CodeNotAuthorized
}
