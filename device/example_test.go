package device_test

import (
	"fmt"
	"os"
	"time"

	"github.com/edgeanchor/edgeanchor/device"
)

// A gateway's path for one message: open it, look the key up by the body's
// DID, check the signature and the schema, and turn a failure into a reason
// label.
func Example() {
	pub, err := device.ReadPublicKeyFile("testdata/golden/key.pub.pem")
	if err != nil {
		panic(err)
	}
	for _, name := range []string{"valid-env.dust", "bad-signature", "schema-out-of-range"} {
		raw, err := os.ReadFile("testdata/golden/" + name + ".env.json")
		if err != nil {
			panic(err)
		}
		o, err := device.Open(raw, 0)
		if err == nil {
			// A gateway would find pub by o.Body.DID in its registry.
			err = o.VerifySignature(pub)
		}
		if err == nil {
			err = device.ValidateData(o.Body.Kind, o.Body.Data)
		}
		if err != nil {
			fmt.Printf("%s: refused (%s)\n", name, device.Reason(err))
			continue
		}
		fmt.Printf("%s: seq %d of %s at %s\n", name, o.Body.Seq, o.Body.Kind, o.Body.TS)
	}
	// Output:
	// valid-env.dust: seq 1 of env.dust at 2026-11-25T10:00:00Z
	// bad-signature: refused (signature)
	// schema-out-of-range: refused (schema)
}

var goldenTS = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// A device's path: a key, a body, an envelope.
func ExampleSeal() {
	priv, err := device.GenerateKey()
	if err != nil {
		panic(err)
	}
	s := device.NewKeySigner(priv)
	body, err := device.NewBody(s.DID(), 1, goldenTS, device.KindDust,
		map[string]float64{"pm25_ugm3": 35.2, "pm10_ugm3": 71, "noise_dba": 62.5})
	if err != nil {
		panic(err)
	}
	env, err := device.Seal(s, body)
	if err != nil {
		panic(err)
	}
	o, err := device.Verify(env, s.Public(), 0)
	fmt.Println(o.Body.Kind, o.Body.Seq, err)
	// Output: env.dust 1 <nil>
}
