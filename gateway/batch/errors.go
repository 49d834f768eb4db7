package batch

import (
	"errors"
	"fmt"
	"strings"
)

// ErrConfig means a batcher or anchorer was given a bad setting; the
// wrapped message names it (the gateway's Config.Validate checks the keys
// behind them first).
var ErrConfig = errors.New("gateway: invalid config")

// wrapErr adds context to err ("gateway: CONTEXT: err") without repeating
// the "gateway: " prefix that err may carry already; errors.Is and As see
// err.
func wrapErr(err error, format string, args ...any) error {
	return &wrappedErr{ctx: fmt.Sprintf(format, args...), err: err}
}

type wrappedErr struct {
	ctx string
	err error
}

func (e *wrappedErr) Error() string {
	return "gateway: " + e.ctx + ": " + strings.TrimPrefix(e.err.Error(), "gateway: ")
}

func (e *wrappedErr) Unwrap() error { return e.err }
