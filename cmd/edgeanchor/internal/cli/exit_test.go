package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"testing"

	"github.com/edgeanchor/edgeanchor/anchor/ledgerclient"
)

func TestExitCode(t *testing.T) {
	pathErr := &fs.PathError{Op: "open", Path: "x", Err: fs.ErrNotExist}
	for _, tc := range []struct {
		name   string
		err    error
		want   int
		marked bool
	}{
		{"nil", nil, 0, false},
		{"usage", UsageErr(errors.New("--out is required")), ExitUsage, true},
		{"io", IOErr(errors.New("read")), ExitUsage, true},
		{"check failed", CheckFailed(errors.New("bad")), ExitFailed, true},
		{"failed or io: a file", FailedOrIO(pathErr), ExitUsage, true},
		{"failed or io: content", FailedOrIO(errors.New("bad content")), ExitFailed, true},
		{"wrapped mark", fmt.Errorf("ledger: %w", CheckFailed(errors.New("refused"))), ExitFailed, true},
		{"unmarked file error", fmt.Errorf("trust: %w", pathErr), ExitUsage, false},
		{"unmarked unreachable node", fmt.Errorf("rpc: %w", ledgerclient.ErrUnreachable), ExitUsage, false},
		{"unmarked other", errors.New("no"), ExitFailed, false},
	} {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("%s: ExitCode = %d, want %d", tc.name, got, tc.want)
		}
		if got := Marked(tc.err); got != tc.marked {
			t.Errorf("%s: Marked = %v, want %v", tc.name, got, tc.marked)
		}
	}
	if err := UsageErr(errors.New("--out is required")); err.Error() != "--out is required" || errors.Unwrap(err) == nil {
		t.Errorf("a marked error reads as its cause: %q", err)
	}
}
