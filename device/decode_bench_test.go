package device

import (
	"os"
	"path/filepath"
	"testing"
)

// Focused benchmarks of the per-message decode on the golden valid envelope
// of each kind: Open (envelope and body), ParseBody and ValidateData.

func benchGolden(b *testing.B, kind string) (env []byte, o *Opened) {
	b.Helper()
	env, err := os.ReadFile(filepath.Join(goldenDir, "valid-"+kind+".env.json"))
	if err != nil {
		b.Fatal(err)
	}
	if o, err = Open(env, 0); err != nil {
		b.Fatal(err)
	}
	return env, o
}

func BenchmarkOpenKind(b *testing.B) {
	for _, kind := range Kinds() {
		b.Run(kind, func(b *testing.B) {
			env, _ := benchGolden(b, kind)
			b.ReportAllocs()
			b.SetBytes(int64(len(env)))
			for b.Loop() {
				if _, err := Open(env, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkParseBodyKind(b *testing.B) {
	for _, kind := range Kinds() {
		b.Run(kind, func(b *testing.B) {
			_, o := benchGolden(b, kind)
			body := o.Envelope.Body
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var bd Body
				if err := ParseBody(body, &bd); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkValidateDataKind(b *testing.B) {
	for _, kind := range Kinds() {
		b.Run(kind, func(b *testing.B) {
			_, o := benchGolden(b, kind)
			data := o.Body.Data
			b.ReportAllocs()
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if err := ValidateData(kind, data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpenRefused is Open on golden envelopes it refuses: the fast
// path gives up and the strict path finds the reason.
func BenchmarkOpenRefused(b *testing.B) {
	for _, name := range []string{"duplicate-key", "member-case", "bad-timestamp", "base64-line-break"} {
		b.Run(name, func(b *testing.B) {
			env, err := os.ReadFile(filepath.Join(goldenDir, name+".env.json"))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Open(env, 0); err == nil {
					b.Fatal("accepted")
				}
			}
		})
	}
}
