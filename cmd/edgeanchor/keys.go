package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/device"
)

func init() {
	register(newKeygenCmd)
	register(newDIDCmd)
}

// devUsageErr is exit code 2: the command line itself is wrong.
func devUsageErr(format string, args ...any) error {
	return usageErr(fmt.Errorf(format, args...))
}

// devFailed is exit code 1 (bad input or a failed check), or 2 for an I/O
// error (failedOrIO).
func devFailed(err error) error { return failedOrIO(err) }

// devFlagErrors makes cobra's flag-parsing errors exit with 2 too.
func devFlagErrors(cmd *cobra.Command) *cobra.Command {
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	return cmd
}

// devArgs wraps a cobra.PositionalArgs so its errors exit with 2.
func devArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageErr(err)
		}
		return nil
	}
}

// pubPathFor names the public key file that goes with a private key file:
// KEY.pem → KEY.pub.pem (any other name gets .pub.pem appended).
func devPubPath(keyPath string) string {
	return strings.TrimSuffix(keyPath, ".pem") + ".pub.pem"
}

func newKeygenCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen --out KEY.pem",
		Short: "Make a new SM2 device key and print its DID",
		Long: `Makes a new SM2 key pair. The private key is written to KEY.pem as PKCS#8 PEM
with mode 0600, the public key to KEY.pub.pem as SubjectPublicKeyInfo PEM; both
are the forms OpenSSL 3 reads and writes. The DID (did:ea: and the first 16
bytes of SM3 over the 65-byte public point, in hex) is printed on stdout.
Neither file may exist already: a key is never overwritten.`,
		Example: `  edgeanchor keygen --out keys/gate-7.pem    # writes keys/gate-7.pem and keys/gate-7.pub.pem`,
		Args:    devArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return devUsageErr("--out KEY.pem is required")
			}
			pubPath := devPubPath(out)
			for _, p := range []string{out, pubPath} {
				if _, err := os.Lstat(p); err == nil {
					return devFailed(fmt.Errorf("%s exists; refusing to overwrite a key", p))
				} else if !errors.Is(err, os.ErrNotExist) {
					return devFailed(err)
				}
			}
			priv, err := device.GenerateKey()
			if err != nil {
				return devFailed(err)
			}
			if err := device.WritePrivateKeyFile(out, priv); err != nil {
				return devFailed(err)
			}
			if err := device.WritePublicKeyFile(pubPath, &priv.PublicKey); err != nil {
				os.Remove(out) // we created it just now; leave nothing half-made
				return devFailed(err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s (private, 0600) and %s\n", out, pubPath)
			fmt.Fprintln(cmd.OutOrStdout(), device.DIDFromPublicKey(&priv.PublicKey))
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "private key file to create (the public key goes to the same name with .pub.pem)")
	return devFlagErrors(cmd)
}

func newDIDCmd() *cobra.Command {
	var pubPath string
	cmd := &cobra.Command{
		Use:   "did --pub PUB.pem",
		Short: "Print the DID of a public key",
		Long: `Prints the DID of an SM2 public key (SubjectPublicKeyInfo PEM, as written by
keygen or by openssl pkey -pubout): did:ea: and the first 16 bytes, in
lowercase hex, of SM3 over the 65-byte uncompressed point.`,
		Args: devArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if pubPath == "" {
				return devUsageErr("--pub PUB.pem is required")
			}
			pub, err := device.ReadPublicKeyFile(pubPath)
			if err != nil {
				return devFailed(err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), device.DIDFromPublicKey(pub))
			return nil
		},
	}
	cmd.Flags().StringVar(&pubPath, "pub", "", "public key file (PEM)")
	return devFlagErrors(cmd)
}
