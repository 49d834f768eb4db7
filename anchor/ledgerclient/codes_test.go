package ledgerclient

import (
	"testing"

	"github.com/edgeanchor/edgeanchor/ledger"
)

// The client names the ledger's not-found query code without importing the
// ledger application.
func TestQueryCodeNotFoundIsTheLedgers(t *testing.T) {
	if queryCodeNotFound != ledger.CodeNotFound {
		t.Fatalf("queryCodeNotFound = %d, ledger.CodeNotFound = %d", queryCodeNotFound, ledger.CodeNotFound)
	}
}
