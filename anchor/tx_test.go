package anchor

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/device/credential"
)

func newSigner(t testing.TB) *device.KeySigner {
	t.Helper()
	k, err := device.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return device.NewKeySigner(k)
}

var ts0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func TestEncodeDecodeTx(t *testing.T) {
	gw := newSigner(t)
	dev := newSigner(t)
	reg, err := credential.NewRegistration(dev.Public(), "payroll", "site-a", ts0, "")
	if err != nil {
		t.Fatal(err)
	}
	devSig, err := dev.Sign(reg)
	if err != nil {
		t.Fatal(err)
	}
	h := sampleHeader()
	h.Gateway = gw.DID()
	bodies := map[string]func() ([]byte, error){
		TypeProposal: func() ([]byte, error) {
			act, err := NewGatewayAction(gw.Public(), "site-a", "Gateway A")
			if err != nil {
				return nil, err
			}
			return NewProposalBody(KindAddGateway, act, 100, ts0)
		},
		TypeApproval:       func() ([]byte, error) { return NewApprovalBody(SM3([]byte("p")), ts0) },
		TypeRegisterDevice: func() ([]byte, error) { return NewRegisterDeviceBody(gw.DID(), reg, devSig, ts0) },
		TypeRevokeDevice:   func() ([]byte, error) { return NewRevokeDeviceBody(dev.DID(), "lost", ts0) },
		TypeAnchorBatch:    func() ([]byte, error) { return h.Encode(), nil },
	}
	for typ, mk := range bodies {
		t.Run(typ, func(t *testing.T) {
			body, err := mk()
			if err != nil {
				t.Fatal(err)
			}
			raw, err := EncodeTx(gw, body)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(raw), `{"body":"`+base64.StdEncoding.EncodeToString(body)+`","signer":"`+gw.DID().String()+`","sig":"`) {
				t.Fatalf("tx bytes not in the documented form: %s", raw)
			}
			tx, err := DecodeTx(raw)
			if err != nil {
				t.Fatal(err)
			}
			if tx.Type() != typ || string(tx.Body) != string(body) || tx.Signer != gw.DID() {
				t.Fatalf("decoded %q from %s", tx.Type(), raw)
			}
			if !tx.VerifySignature(gw.Public()) {
				t.Fatal("signature does not verify")
			}
			if tx.VerifySignature(dev.Public()) {
				t.Fatal("signature verifies under another key")
			}
			if tx.BodyHash() != SM3(body) {
				t.Fatal("BodyHash is not SM3 of the body")
			}
			v, err := DecodeBody(tx.Body)
			if err != nil {
				t.Fatalf("DecodeBody: %v", err)
			}
			switch b := v.(type) {
			case *RegisterDeviceBody:
				r, pub, err := credential.ParseRegistration(b.Registration)
				if err != nil {
					t.Fatal(err)
				}
				if r.DID != dev.DID() || !device.VerifySignature(pub, b.Registration, b.DeviceSig) {
					t.Fatal("registration does not carry the device's proof")
				}
			case *BatchHeader:
				if b.Hash() != h.Hash() {
					t.Fatal("header changed")
				}
			}
		})
	}
}

func TestDecodeTxRefuses(t *testing.T) {
	gw := newSigner(t)
	body, _ := NewRevokeDeviceBody(gw.DID(), "lost", ts0)
	good, _ := EncodeTx(gw, body)
	b64 := base64.StdEncoding.EncodeToString
	cases := map[string]struct {
		in   string
		want error
	}{
		"empty":          {``, ErrMalformedTx},
		"garbage":        {"\x00\x01", ErrMalformedTx},
		"array":          {`[]`, ErrMalformedTx},
		"trailing":       {string(good) + `x`, ErrMalformedTx},
		"unknown member": {strings.Replace(string(good), `{"body"`, `{"x":1,"body"`, 1), ErrMalformedTx},
		"duplicate":      {strings.Replace(string(good), `{"body"`, `{"signer":"x","body"`, 1), ErrMalformedTx},
		"bad signer":     {`{"body":"` + b64(body) + `","signer":"bob","sig":"AA=="}`, ErrMalformedTx},
		"no sig":         {`{"body":"` + b64(body) + `","signer":"` + gw.DID().String() + `"}`, ErrMalformedTx},
		"no body":        {`{"signer":"` + gw.DID().String() + `","sig":"AA=="}`, ErrMalformedTx},
		"bad base64":     {`{"body":"!!","signer":"` + gw.DID().String() + `","sig":"AA=="}`, ErrMalformedTx},
		"body not json":  {`{"body":"` + b64([]byte("hi")) + `","signer":"` + gw.DID().String() + `","sig":"AA=="}`, ErrMalformedTx},
		"body no type":   {`{"body":"` + b64([]byte(`{"a":1}`)) + `","signer":"` + gw.DID().String() + `","sig":"AA=="}`, ErrMalformedTx},
		"unknown type":   {`{"body":"` + b64([]byte(`{"type":"Mint"}`)) + `","signer":"` + gw.DID().String() + `","sig":"AA=="}`, ErrUnknownTxType},
		"too large":      {`{"body":"` + strings.Repeat("A", MaxTxBytes) + `"}`, ErrMalformedTx},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeTx([]byte(c.in)); !errors.Is(err, c.want) {
				t.Fatalf("DecodeTx error = %v, want %v", err, c.want)
			}
		})
	}
}

func TestDecodeBodyRefuses(t *testing.T) {
	gw := newSigner(t)
	other := newSigner(t)
	der, _ := device.MarshalPublicKeyDER(gw.Public())
	rg := func(f func(a *GatewayAction, b *ProposalBody)) []byte {
		a := &GatewayAction{DID: gw.DID(), Pub: der, Site: "s", Name: "n"}
		b := &ProposalBody{Type: TypeProposal, Kind: KindAddGateway, Deadline: 10, TS: "2026-11-25T10:00:00Z"}
		f(a, b)
		if b.Action == nil {
			b.Action, _ = json.Marshal(a)
		}
		out, _ := json.Marshal(b)
		return out
	}
	prop := func(kind, action string) []byte {
		return []byte(`{"type":"Proposal","kind":"` + kind + `","action":` + action + `,"deadline":10,"ts":"2026-11-25T10:00:00Z"}`)
	}
	ed := `"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"`
	gder := `"` + base64.StdEncoding.EncodeToString(der) + `"`
	cases := map[string][]byte{
		"gateway did mismatch":    rg(func(a *GatewayAction, _ *ProposalBody) { a.DID = other.DID() }),
		"gateway bad pub":         rg(func(a *GatewayAction, _ *ProposalBody) { a.Pub = []byte{1, 2, 3} }),
		"gateway no site":         rg(func(a *GatewayAction, _ *ProposalBody) { a.Site = "" }),
		"gateway long name":       rg(func(a *GatewayAction, _ *ProposalBody) { a.Name = strings.Repeat("n", MaxTextLen+1) }),
		"gateway control char":    rg(func(a *GatewayAction, _ *ProposalBody) { a.Name = "a\nb" }),
		"proposal local time":     rg(func(_ *GatewayAction, b *ProposalBody) { b.TS = "2026-11-25T10:00:00+08:00" }),
		"proposal no deadline":    rg(func(_ *GatewayAction, b *ProposalBody) { b.Deadline = 0 }),
		"proposal unknown kind":   rg(func(_ *GatewayAction, b *ProposalBody) { b.Kind = "mint" }),
		"proposal action array":   rg(func(_ *GatewayAction, b *ProposalBody) { b.Action = []byte(`[]`) }),
		"proposal extra member":   []byte(strings.Replace(string(rg(func(*GatewayAction, *ProposalBody) {})), `"ts"`, `"x":1,"ts"`, 1)),
		"action extra member":     prop(KindRemoveGateway, `{"did":"`+gw.DID().String()+`","x":1}`),
		"action duplicate member": prop(KindRemoveGateway, `{"did":"`+gw.DID().String()+`","DID":"`+gw.DID().String()+`"}`),
		"remove bad did":          prop(KindRemoveGateway, `{"did":"did:ea:zz"}`),
		"validator short key":     prop(KindAddValidator, `{"pub":"AAAA","power":10,"name":"v"}`),
		"validator zero power":    prop(KindAddValidator, `{"pub":`+ed+`,"power":0,"name":"v"}`),
		"validator huge power":    prop(KindSetValidatorPower, `{"pub":`+ed+`,"power":1000001,"name":""}`),
		"set-power with name":     prop(KindSetValidatorPower, `{"pub":`+ed+`,"power":5,"name":"v"}`),
		"committee threshold 0":   prop(KindSetCommittee, `{"members":[`+gder+`],"threshold":0}`),
		"committee threshold > N": prop(KindSetCommittee, `{"members":[`+gder+`],"threshold":2}`),
		"committee twice":         prop(KindSetCommittee, `{"members":[`+gder+`,`+gder+`],"threshold":1}`),
		"committee empty":         prop(KindSetCommittee, `{"members":[],"threshold":1}`),
		"regulators missing":      prop(KindSetRegulators, `{}`),
		"regulators bad key":      prop(KindSetRegulators, `{"regulators":["AAAA"]}`),
		"approval zero id":        []byte(`{"type":"Approval","proposal":"` + strings.Repeat("0", 64) + `","ts":"2026-11-25T10:00:00Z"}`),
		"approval bad id":         []byte(`{"type":"Approval","proposal":"ABC","ts":"2026-11-25T10:00:00Z"}`),
		"revoke no ts":            []byte(`{"type":"RevokeDevice","did":"` + other.DID().String() + `","reason":""}`),
		"device no reg":           []byte(`{"type":"RegisterDevice","gateway":"` + gw.DID().String() + `","registration":"","device_sig":"","ts":"2026-11-25T10:00:00Z"}`),
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := DecodeBody(in); !errors.Is(err, ErrMalformedTx) {
				t.Fatalf("DecodeBody(%s) error = %v, want ErrMalformedTx", in, err)
			}
		})
	}
}

func TestParseGenesisState(t *testing.T) {
	admin := newSigner(t)
	gw := newSigner(t)
	ader, _ := device.MarshalPublicKeyDER(admin.Public())
	gder, _ := device.MarshalPublicKeyDER(gw.Public())
	g := GenesisState{Committee: Committee{Members: [][]byte{ader}, Threshold: 1}, Regulators: [][]byte{ader},
		Gateways: []GenesisGateway{{DID: gw.DID(), Pub: gder, Site: "site-a", Name: "A"}}}
	raw, _ := json.Marshal(g)
	if _, err := ParseGenesisState(raw); err != nil {
		t.Fatal(err)
	}
	g.Gateways[0].DID = admin.DID()
	raw, _ = json.Marshal(g)
	if _, err := ParseGenesisState(raw); err == nil {
		t.Fatal("genesis gateway with a foreign DID accepted")
	}
	for _, bad := range []string{`{"committee":{"members":[],"threshold":1},"regulators":[],"gateways":[]}`,
		`{"admins":[]}`, `{"committee":{"members":["` + base64.StdEncoding.EncodeToString(ader) + `"],"threshold":2},"regulators":[],"gateways":[]}`} {
		if _, err := ParseGenesisState([]byte(bad)); err == nil {
			t.Fatalf("genesis %s accepted", bad)
		}
	}
}

func FuzzDecodeTx(f *testing.F) {
	gw := newSigner(f)
	body, _ := NewRevokeDeviceBody(gw.DID(), "lost", ts0)
	good, _ := EncodeTx(gw, body)
	f.Add(good)
	f.Add([]byte(`{"body":"e30=","signer":"did:ea:00112233445566778899aabbccddeeff","sig":"AA=="}`))
	f.Add([]byte(`{"body":"e30=","signer":"did:ea:00112233445566778899aabbccddeeff","sig":"AA=="} `))
	f.Add([]byte(`{"body":"e30\u003d","signer":"did:ea:00112233445566778899aabbccddeeff","sig":"AA=="}`))
	f.Add([]byte(`{"body":"e30=","signer":"did:ea:00112233445566778899aabbccddeeff","sig":"AA==","sig":"AQ=="}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		// the canonical fast path agrees with the general decoder
		if fast, ok := decodeCanonicalTx(b); ok {
			var slow Tx
			if err := decodeStrict(b, &slow); err != nil {
				t.Fatalf("fast path took %q, the general decoder refuses it: %v", b, err)
			}
			if !bytes.Equal(fast.Body, slow.Body) || fast.Signer != slow.Signer || !bytes.Equal(fast.Sig, slow.Sig) {
				t.Fatalf("fast path %+v, general decoder %+v for %q", fast, slow, b)
			}
		}
		tx, err := DecodeTx(b)
		if err != nil {
			return
		}
		if len(tx.Body) == 0 || len(tx.Sig) == 0 || tx.Type() == "" {
			t.Fatalf("accepted incomplete tx %q", b)
		}
		if _, ok := decodeCanonicalTx(b); !ok && bytes.Equal(tx.Encode(), b) {
			t.Fatalf("canonical bytes %q missed the fast path", b)
		}
		_, _ = DecodeBody(tx.Body) // must not panic
	})
}
