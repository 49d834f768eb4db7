package listener

import (
	"errors"
	"slices"
	"syscall"
	"testing"
)

// The accept-error series created at start must cover every label
// acceptErrorLabel can give, or a panel shows "No data" for that error.
func TestAcceptErrorLabelsKnown(t *testing.T) {
	for _, err := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS, syscall.ENOMEM, errors.New("x")} {
		if got := acceptErrorLabel(err); !slices.Contains(acceptErrorLabels, got) {
			t.Errorf("acceptErrorLabel(%v) = %q, not in acceptErrorLabels %v", err, got, acceptErrorLabels)
		}
	}
}
