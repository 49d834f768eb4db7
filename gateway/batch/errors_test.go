package batch

import (
	"errors"
	"fmt"
	"testing"
)

// The context added to a store error does not repeat "gateway: " (the
// issue saw "gateway: batcher: gateway: batcher: ...").
func TestWrapErrNoRepeatedPrefix(t *testing.T) {
	// cause stands for the store's unreadable-value error.
	cause := errors.New("value unreadable: its value log is cut short or damaged")
	inner := wrapErr(fmt.Errorf("gateway: record 5: %w", cause), "batch %d..%d", 1, 9)
	err := wrapErr(inner, "batcher")
	want := "gateway: batcher: batch 1..9: record 5: value unreadable: its value log is cut short or damaged"
	if err.Error() != want {
		t.Fatalf("got  %q\nwant %q", err.Error(), want)
	}
	if !errors.Is(err, cause) {
		t.Fatal("errors.Is lost the cause")
	}
}
