package credential

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/edgeanchor/edgeanchor/device"
)

// Registration body constants.
const (
	// TypeRegistration is the "type" member of a registration body.
	TypeRegistration = "DeviceRegistration"
	// RegistrationVersion is the only registration version.
	RegistrationVersion = 1
	// MaxRegistrationBytes bounds a registration body (the ledger's bound
	// on a whole transaction).
	MaxRegistrationBytes = 16 << 10
	// MaxSiteLen bounds the site member.
	MaxSiteLen = 128
)

// Device kinds a device may be registered with.
const (
	KindPayroll = "payroll"
	KindSurvey  = "survey"
	KindEnv     = "env"
)

// ValidKind reports whether kind is payroll, survey or env.
func ValidKind(kind string) bool {
	return kind == KindPayroll || kind == KindSurvey || kind == KindEnv
}

// ErrMalformedRegistration means a device registration body is not
// well-formed (docs/protocol.md, "Enrollment credential"). The device must
// fix its encoder; the error's detail names the member.
var ErrMalformedRegistration = errors.New("credential: malformed device registration")

// DeviceRegistration is the device-made registration body:
//
//	{"type":"DeviceRegistration","v":1,"did":"did:ea:…","pub":"<b64 SPKI DER>","kind":"payroll","site":"site-a","ts":"…Z","nonce":"<hex>"}
type DeviceRegistration struct {
	Type  string     `json:"type"`
	V     int        `json:"v"`
	DID   device.DID `json:"did"`
	Pub   []byte     `json:"pub"`
	Kind  string     `json:"kind"`
	Site  string     `json:"site"`
	TS    string     `json:"ts"`
	Nonce string     `json:"nonce"`
}

// NewRegistration returns the registration bytes a device signs (with its
// own key) to prove possession; ts is written as RFC 3339 UTC with as many
// fractional digits as it has. An empty nonce gets 16 random bytes.
func NewRegistration(pub *ecdsa.PublicKey, kind, site string, ts time.Time, nonce string) ([]byte, error) {
	der, err := device.MarshalPublicKeyDER(pub)
	if err != nil {
		return nil, err
	}
	if nonce == "" {
		if nonce, err = randomNonce(); err != nil {
			return nil, err
		}
	}
	reg := &DeviceRegistration{
		Type: TypeRegistration, V: RegistrationVersion, DID: device.DIDFromPublicKey(pub),
		Pub: der, Kind: kind, Site: site, TS: ts.UTC().Format(time.RFC3339Nano), Nonce: nonce,
	}
	if _, err := reg.validate(); err != nil {
		return nil, err
	}
	return json.Marshal(reg)
}

// ParseRegistration decodes registration bytes strictly (no unknown or
// repeated members, nothing after the object) and checks their members:
// type, version, the DID is that of pub, a known device kind, a site, an
// RFC 3339 UTC ts and a 16–64 hex digit nonce. It returns the parsed public
// key too. The signature is not checked here.
func ParseRegistration(b []byte) (*DeviceRegistration, *ecdsa.PublicKey, error) {
	if len(b) > MaxRegistrationBytes {
		return nil, nil, fmt.Errorf("%w: %d bytes", ErrMalformedRegistration, len(b))
	}
	var reg DeviceRegistration
	if err := decodeStrict(b, &reg); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrMalformedRegistration, err)
	}
	pub, err := reg.validate()
	if err != nil {
		return nil, nil, err
	}
	return &reg, pub, nil
}

func (r *DeviceRegistration) validate() (*ecdsa.PublicKey, error) {
	if r.Type != TypeRegistration {
		return nil, fmt.Errorf("%w: type %q, want %q", ErrMalformedRegistration, r.Type, TypeRegistration)
	}
	if r.V != RegistrationVersion {
		return nil, fmt.Errorf("%w: version %d, want %d", ErrMalformedRegistration, r.V, RegistrationVersion)
	}
	if _, err := device.ParseDID(string(r.DID)); err != nil {
		return nil, fmt.Errorf("%w: did: %v", ErrMalformedRegistration, err)
	}
	pub, err := device.ParsePublicKeyDER(r.Pub)
	if err != nil {
		return nil, fmt.Errorf("%w: pub: %v", ErrMalformedRegistration, err)
	}
	if !r.DID.Matches(pub) {
		return nil, fmt.Errorf("%w: did %s is not the DID of pub (%s)", ErrMalformedRegistration, r.DID, device.DIDFromPublicKey(pub))
	}
	if !ValidKind(r.Kind) {
		return nil, fmt.Errorf("%w: kind %q (want payroll, survey or env)", ErrMalformedRegistration, r.Kind)
	}
	if err := checkSite(r.Site); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedRegistration, err)
	}
	if err := checkTS(r.TS); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformedRegistration, err)
	}
	if n := len(r.Nonce); n < 16 || n > 64 || !isLowerHex(r.Nonce) {
		return nil, fmt.Errorf("%w: nonce must be 16-64 lowercase hex digits", ErrMalformedRegistration)
	}
	return pub, nil
}

func checkSite(s string) error {
	switch {
	case s == "":
		return errors.New("site is required")
	case len(s) > MaxSiteLen:
		return fmt.Errorf("site longer than %d bytes", MaxSiteLen)
	case !utf8.ValidString(s):
		return errors.New("site is not UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return errors.New("site holds control characters")
		}
	}
	return nil
}

func checkTS(ts string) error {
	if !strings.HasSuffix(ts, "Z") {
		return fmt.Errorf("ts %q is not RFC 3339 UTC (must end in Z)", ts)
	}
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return fmt.Errorf("ts: %v", err)
	}
	if t.Year() < 2000 || t.Year() > 9999 {
		return fmt.Errorf("ts %q out of range", ts)
	}
	return nil
}

// decodeStrict refuses a member named twice (compared the way
// encoding/json matches names, case-insensitively), unknown members and
// trailing data.
func decodeStrict(data []byte, v any) error {
	if err := device.CheckJSON(data, device.JSONOptions{MaxDepth: 16, FoldCase: true}); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if len(bytes.TrimLeft(data[dec.InputOffset():], " \t\r\n")) != 0 {
		return errors.New("trailing data after JSON value")
	}
	return nil
}
