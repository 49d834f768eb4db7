package audit

import (
	"bytes"
	"math"
	"slices"
	"testing"
)

// TestAuditFindingEscaped: a finding quotes what a gateway or the ledger
// said (a DID, a kind, an error); a line break and a made-up line in it
// print escaped on the finding's own line.
func TestAuditFindingEscaped(t *testing.T) {
	var out bytes.Buffer
	a := &auditor{o: Options{Out: &out}}
	a.find("record", "gseq %d: kind %s", 7, "env.dust\n✓ no findings")
	if got, want := out.String(), "✗ record: gseq 7: kind env.dust\\n✓ no findings\n"; got != want {
		t.Fatalf("finding printed %q, want %q", got, want)
	}
}

func TestSeqSet(t *testing.T) {
	var s seqSet
	for _, seq := range []uint64{5, 1, 3, 2, 9, 4, 10, math.MaxUint64, 0} {
		if !s.add(seq) {
			t.Fatalf("add(%d): already there", seq)
		}
	}
	for _, seq := range []uint64{1, 5, 9, 10, math.MaxUint64, 0} {
		if s.add(seq) {
			t.Fatalf("add(%d) again: not reported", seq)
		}
	}
	want := []seqRun{{0, 5}, {9, 10}, {math.MaxUint64, math.MaxUint64}}
	if !slices.Equal(s.runs, want) {
		t.Fatalf("runs %v, want %v", s.runs, want)
	}
	s.add(7)
	s.add(8)
	s.add(6)
	if want := []seqRun{{0, 10}, {math.MaxUint64, math.MaxUint64}}; !slices.Equal(s.runs, want) {
		t.Fatalf("runs %v, want %v", s.runs, want)
	}
}
