// Package ledgercmd holds the edgeanchor commands that set up, run and talk
// to the consortium ledger: ledger (init, testnet, start, genesis,
// export-trust, trust update, submit), consortium (proposals and
// approvals), device (revoke, show, list) and gateway list. Package main
// adds them to its root command (Commands) and to its gateway command
// (GatewayCommands).
package ledgercmd

import (
	"github.com/spf13/cobra"

	"github.com/edgeanchor/edgeanchor/cmd/edgeanchor/internal/cli"
)

// commands is filled by each command file's init, so that adding a command
// touches only its own file.
var commands []func() *cobra.Command

func register(c func() *cobra.Command) { commands = append(commands, c) }

// Commands are the package's top-level commands.
func Commands() []func() *cobra.Command { return commands }

// GatewayCommands are the package's subcommands of `edgeanchor gateway`.
func GatewayCommands() []func() *cobra.Command { return gatewaySubcommands }

// The exit-code rule of package cli, by the short names the commands use.
var (
	usageErr    = cli.UsageErr
	ioErr       = cli.IOErr
	checkFailed = cli.CheckFailed
	failedOrIO  = cli.FailedOrIO
)

// plural is one or many, as n asks.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
