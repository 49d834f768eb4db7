// Command edgeanchor is the gateway, ledger node, and the tools of the
// edgeanchor project: keys, envelopes, tokens, proof verification and audit.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/cmd/edgeanchor/internal/cli"
	"github.com/edgeanchor/edgeanchor/cmd/edgeanchor/internal/ledgercmd"
	"github.com/edgeanchor/edgeanchor/internal/safetext"
)

// commands is filled by each subcommand file's init, so that adding a command
// touches only its own file.
var commands []func() *cobra.Command

func register(c func() *cobra.Command) { commands = append(commands, c) }

// The exit-code rule of package cli, by the short names the commands use.
var (
	usageErr    = cli.UsageErr
	ioErr       = cli.IOErr
	checkFailed = cli.CheckFailed
	failedOrIO  = cli.FailedOrIO
)

func newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "edgeanchor",
		Short:         "Trustworthy field data: signed device telemetry anchored on a consortium ledger",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, c := range append(commands, ledgercmd.Commands()...) {
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
				if err != nil && !cli.Marked(err) {
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
	return cli.ExitCode(err)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}
