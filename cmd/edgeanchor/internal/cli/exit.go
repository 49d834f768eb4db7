// Package cli is the one exit-code rule of every edgeanchor command
// (README, "Commands"): 0 when the command did what it was asked; 1 when a
// check failed (invalid evidence, findings, bad input content) or the
// ledger refused; 2 for a usage error (unknown command or flag, wrong
// arguments, a required flag missing) or an I/O error (a file that cannot
// be read or written, a server that cannot be reached). A command marks
// the error it returns with UsageErr, IOErr, CheckFailed or FailedOrIO;
// the dispatcher turns it into the process's exit code with ExitCode.
package cli

import (
	"errors"
	"io/fs"
	"net"
	"net/url"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
)

// The exit codes besides 0.
const (
	// ExitFailed: the check failed or the ledger refused.
	ExitFailed = 1
	// ExitUsage: a usage error or an I/O error.
	ExitUsage = 2
)

// exitError carries a process exit code through cobra.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// UsageErr marks err as a usage error (exit 2).
func UsageErr(err error) error { return &exitError{code: ExitUsage, err: err} }

// IOErr marks err as an I/O error (exit 2): a file or a server could not be
// read or written.
func IOErr(err error) error { return &exitError{code: ExitUsage, err: err} }

// CheckFailed marks err as a failed check or a ledger refusal (exit 1).
func CheckFailed(err error) error { return &exitError{code: ExitFailed, err: err} }

// FailedOrIO is CheckFailed, or IOErr when err is an I/O error (IsIOError).
func FailedOrIO(err error) error {
	if IsIOError(err) {
		return IOErr(err)
	}
	return CheckFailed(err)
}

// IsIOError reports whether err is about reading or writing a file or
// reaching a server rather than about what was read.
func IsIOError(err error) bool {
	var pe *fs.PathError
	var ue *url.Error
	var ne net.Error
	return errors.As(err, &pe) || errors.As(err, &ue) || errors.As(err, &ne) ||
		errors.Is(err, ledgerclient.ErrUnreachable)
}

// Marked reports whether err carries its exit code (was made by UsageErr,
// IOErr, CheckFailed or FailedOrIO).
func Marked(err error) bool {
	var ee *exitError
	return errors.As(err, &ee)
}

// ExitCode is the process exit code for what a command returned: 0 for
// nil, the code a marked error carries, 2 for an unmarked I/O error
// (IsIOError), otherwise 1.
func ExitCode(err error) int {
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	if IsIOError(err) {
		return ExitUsage
	}
	return ExitFailed
}
