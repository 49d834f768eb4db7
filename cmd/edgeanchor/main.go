// Command edgeanchor is the gateway, ledger node, and the tools of the
// edgeanchor project: keys, envelopes, tokens, proof verification and audit.
package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
	"github.com/edgeanchor/edgeanchor/internal/safetext"
)

// commands is filled by each subcommand file's init, so that adding a command
// touches only its own file.
var commands []func() *cobra.Command

func register(c func() *cobra.Command) { commands = append(commands, c) }

// Exit codes: one rule for every command (README, "Commands").
const (
	// exitFailed: the check failed (invalid evidence, findings, bad input
	// content) or the ledger refused.
	exitFailed = 1
	// exitUsage: a usage error (unknown command or flag, wrong arguments,
	// a required flag missing) or an I/O error (a file that cannot be read
	// or written, a server that cannot be reached).
	exitUsage = 2
)

// exitError carries a process exit code through cobra. Make one with
// usageErr, ioErr or checkFailed; exitCode reads it.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageErr marks err as a usage error (exit 2).
func usageErr(err error) error { return &exitError{code: exitUsage, err: err} }

// ioErr marks err as an I/O error (exit 2): a file or a server could not be
// read or written.
func ioErr(err error) error { return &exitError{code: exitUsage, err: err} }

// checkFailed marks err as a failed check or a ledger refusal (exit 1).
func checkFailed(err error) error { return &exitError{code: exitFailed, err: err} }

// failedOrIO is checkFailed, or ioErr when err is an I/O error (isIOError).
func failedOrIO(err error) error {
	if isIOError(err) {
		return ioErr(err)
	}
	return checkFailed(err)
}

// isIOError reports whether err is about reading or writing a file or
// reaching a server rather than about what was read.
func isIOError(err error) bool {
	var pe *fs.PathError
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &pe) || errors.As(err, &ue) || errors.As(err, &ne) ||
		errors.Is(err, ledgerclient.ErrUnreachable)
}

// exitCode is the process exit code for what a command returned: 0 for
// nil, the code of an *exitError, 2 for an untyped I/O error (isIOError),
// otherwise 1.
func exitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if isIOError(err) {
		return exitUsage
	}
	return exitFailed
}

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
	typeUsageErrors(root)
	return root
}

// typeUsageErrors makes every way cobra reports a wrong command line a
// usage error (exit 2): flag parsing (the root's FlagErrorFunc is inherited),
// positional arguments, required flags, and an unknown or missing
// subcommand (cobra would print the help and exit 0).
func typeUsageErrors(root *cobra.Command) {
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageErr(err) })
	root.PersistentPreRunE = func(c *cobra.Command, _ []string) error {
		if err := c.ValidateRequiredFlags(); err != nil {
			return usageErr(err)
		}
		if err := c.ValidateFlagGroups(); err != nil {
			return usageErr(err)
		}
		return nil
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if check := c.Args; check != nil {
			c.Args = func(c *cobra.Command, args []string) error {
				err := check(c, args)
				var ee *exitError
				if err != nil && !errors.As(err, &ee) {
					return usageErr(err)
				}
				return err
			}
		}
		if c.HasSubCommands() && c.Run == nil && c.RunE == nil {
			if c.Args == nil {
				c.Args = cobra.ArbitraryArgs
			}
			c.RunE = func(c *cobra.Command, args []string) error {
				c.SetOut(c.ErrOrStderr())
				_ = c.Usage()
				if len(args) > 0 {
					return usageErr(fmt.Errorf("unknown command %q for %q", args[0], c.CommandPath()))
				}
				return usageErr(fmt.Errorf("%s: name a command", c.CommandPath()))
			}
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
}

// run executes the command line args and returns the exit code, writing
// the error (if any) to stderr.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRoot()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err != nil {
		// An error can quote what a file, a bundle or a node said.
		fmt.Fprintln(stderr, "edgeanchor:", safetext.Escape(err.Error()))
	}
	return exitCode(err)
}

// plural is one or many, as n asks.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
