package ledgerclient

import (
	"testing"

	ledgerapp "github.com/edgeanchor/edgeanchor/ledger/app"
)

// The client names the ledger's not-found query code without importing the
// ledger application.
func TestQueryCodeNotFoundIsTheLedgers(t *testing.T) {
	if queryCodeNotFound != ledgerapp.CodeNotFound {
		t.Fatalf("queryCodeNotFound = %d, ledgerapp.CodeNotFound = %d", queryCodeNotFound, ledgerapp.CodeNotFound)
	}
}
