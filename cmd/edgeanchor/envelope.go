package main

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/device"
	"github.com/edgeanchor/edgeanchor/internal/safetext"
)

func init() { register(newEnvelopeCmd) }

func newEnvelopeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "envelope",
		Short: "Sign and verify device telemetry envelopes",
		Long: `The envelope is what a device publishes:
{"v":1,"alg":"SM2-SM3","body":"<base64 body bytes>","sig":"<base64 DER signature>"}
The signature (SM2 with SM3, ID 1234567812345678) covers the exact body bytes.
See docs/envelope.md.`,
	}
	cmd.AddCommand(newEnvelopeSignCmd(), newEnvelopeVerifyCmd())
	return cmd
}

// readInput reads a file, or stdin for "-".
func devReadInput(cmd *cobra.Command, path string, limit int) ([]byte, error) {
	var r io.Reader
	if path == "-" {
		r = cmd.InOrStdin()
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	// Read one byte past the limit so "too large" is seen without reading
	// an endless stream.
	data, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	return data, nil
}

// verdict formats a device verification error as "label: message".
func devVerdict(err error) error {
	return fmt.Errorf("%s: %w", device.Reason(err), err)
}

func newEnvelopeSignCmd() *cobra.Command {
	var (
		keyPath, bodyPath, outPath string
		trimNewline                bool
		maxBody                    int
	)
	cmd := &cobra.Command{
		Use:   "sign --key KEY.pem --body BODY.json [--out ENVELOPE.json] [--trim-newline]",
		Short: "Sign a body and print the envelope",
		Long: `Signs the bytes of BODY.json exactly as they are in the file and prints the
envelope (one line of JSON) on stdout, or writes it to --out.

The body is checked first, as a gateway will check it: its JSON and members,
that "did" is the DID of KEY.pem, the timestamp, and the data against the
schema of its kind. A body that would be refused is not signed; the reason is
printed and the exit status is 1.

A trailing newline (most editors add one) is part of the file, so it is part of
the signed bytes and travels in the envelope: valid JSON, but not the compact
form a device produces. It is never dropped silently: sign says so on stderr,
and --trim-newline drops exactly one trailing "\n" (or "\r\n") before signing.`,
		Example: `  edgeanchor envelope sign --key dev.pem --body body.json > envelope.json
  printf '%s' "$BODY" | edgeanchor envelope sign --key dev.pem --body -`,
		Args: devArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if keyPath == "" || bodyPath == "" {
				return devUsageErr("--key KEY.pem and --body BODY.json are required")
			}
			if maxBody <= 0 {
				return devUsageErr("--max-body must be positive")
			}
			signer, err := device.LoadKeySigner(keyPath)
			if err != nil {
				return devFailed(err)
			}
			body, err := devReadInput(cmd, bodyPath, maxBody+2) // room for a "\r\n" to trim
			if err != nil {
				return devFailed(err)
			}
			if bytes.HasSuffix(body, []byte("\n")) {
				if trimNewline {
					body = bytes.TrimSuffix(body, []byte("\n"))
					body = bytes.TrimSuffix(body, []byte("\r"))
				} else {
					name := bodyPath
					if name == "-" {
						name = "the body on stdin"
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "note: %s ends with a newline; it is signed as part of the body (--trim-newline drops it)\n", name)
				}
			}
			if len(body) > maxBody {
				return devFailed(fmt.Errorf("refusing to sign: %w", devVerdict(fmt.Errorf("%w: more than %d bytes", device.ErrTooLarge, maxBody))))
			}
			if err := devCheckBody(body, signer.DID()); err != nil {
				return devFailed(fmt.Errorf("refusing to sign: %w", devVerdict(err)))
			}
			env, err := device.Seal(signer, body)
			if err != nil {
				return devFailed(err)
			}
			env = append(env, '\n')
			if outPath == "" {
				_, err = cmd.OutOrStdout().Write(env)
				return err
			}
			if err := os.WriteFile(outPath, env, 0o644); err != nil {
				return devFailed(err)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&keyPath, "key", "", "private key file (PKCS#8 PEM)")
	f.StringVar(&bodyPath, "body", "", `body file, or "-" for stdin`)
	f.StringVar(&outPath, "out", "", "write the envelope here instead of stdout")
	f.BoolVar(&trimNewline, "trim-newline", false, `drop one trailing "\n" (or "\r\n") before signing`)
	f.IntVar(&maxBody, "max-body", device.DefaultMaxBody, "largest body accepted, in bytes")
	return devFlagErrors(cmd)
}

// checkBody applies to a body the checks Verify applies to an envelope.
func devCheckBody(body []byte, did device.DID) error {
	var b device.Body
	if err := device.ParseBody(body, &b); err != nil {
		return err
	}
	if b.DID != did {
		return fmt.Errorf("%w: body names %s, key is %s", device.ErrDIDMismatch, b.DID, did)
	}
	return device.ValidateData(b.Kind, b.Data)
}

func newEnvelopeVerifyCmd() *cobra.Command {
	var (
		pubPath string
		maxBody int
	)
	cmd := &cobra.Command{
		Use:   "verify --pub PUB.pem [FILE|-]",
		Short: "Verify an envelope (exit 0 valid, 1 invalid)",
		Long: `Verifies an envelope read from FILE, or stdin when FILE is "-" or absent:
its format, version and algorithm, the body's members and timestamp, the data
against the schema of its kind, that the body names the DID of PUB.pem, and
the signature over the exact body bytes.

Valid: prints "valid did=… seq=… kind=… ts=…" and exits 0. Invalid: prints the
reason (malformed, version, algorithm, too_large, timestamp, did_mismatch,
signature or schema, then the detail) and exits 1.`,
		Example: `  edgeanchor envelope verify --pub dev.pub.pem envelope.json
  mosquitto_sub -t 'ea/v1/dev/+/up' -C 1 | edgeanchor envelope verify --pub dev.pub.pem`,
		Args: devArgs(cobra.MaximumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			if pubPath == "" {
				return devUsageErr("--pub PUB.pem is required")
			}
			if maxBody <= 0 {
				return devUsageErr("--max-body must be positive")
			}
			pub, err := device.ReadPublicKeyFile(pubPath)
			if err != nil {
				return devFailed(err)
			}
			path := "-"
			if len(args) == 1 {
				path = args[0]
			}
			// Open refuses anything longer than an envelope of maxBody can be.
			raw, err := devReadInput(cmd, path, 2*maxBody+4096)
			if err != nil {
				return devFailed(err)
			}
			o, err := device.Verify(raw, pub, maxBody)
			if err != nil {
				return devFailed(fmt.Errorf("invalid: %w", devVerdict(err)))
			}
			fmt.Fprintln(cmd.OutOrStdout(), safetext.Sprintf("valid did=%s seq=%d kind=%s ts=%s", o.Body.DID, o.Body.Seq, o.Body.Kind, o.Body.TS))
			return nil
		},
	}
	cmd.Flags().StringVar(&pubPath, "pub", "", "public key file of the device (PEM)")
	cmd.Flags().IntVar(&maxBody, "max-body", device.DefaultMaxBody, "largest body accepted, in bytes")
	return devFlagErrors(cmd)
}
