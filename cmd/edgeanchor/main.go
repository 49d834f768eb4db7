// Command edgeanchor is the gateway, ledger node, and the tools of the
// edgeanchor project: keys, envelopes, tokens, proof verification and audit.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

// commands is filled by each subcommand file's init, so that adding a command
// touches only its own file.
var commands []func() *cobra.Command

func register(c func() *cobra.Command) { commands = append(commands, c) }

// exitError carries a process exit code through cobra (1 = invalid input or a
// failed check, 2 = usage).
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "edgeanchor",
		Short:         "Trustworthy field data: signed device telemetry anchored on a consortium ledger",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, c := range commands {
		root.AddCommand(c())
	}
	return root
}

func main() {
	if err := newRoot().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "edgeanchor:", err)
		var ee *exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		os.Exit(1)
	}
}
