package seqstate

import (
	"encoding/binary"
	"reflect"
	"testing"
)

func TestSeqStateEncoding(t *testing.T) {
	st := State{Last: 40, Gaps: []Range{{2, 2}, {5, 9}, {30, 39}}}
	got, err := Decode(st.Encode())
	if err != nil || !reflect.DeepEqual(got, st) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if got, err := Decode(binary.BigEndian.AppendUint64(nil, 7)); err != nil || got.Last != 7 || len(got.Gaps) != 0 {
		t.Fatalf("an 8-byte value (older stores): %+v, %v", got, err)
	}
	for name, st := range map[string]State{
		"gap at or above last": {Last: 5, Gaps: []Range{{3, 5}}},
		"from above to":        {Last: 9, Gaps: []Range{{4, 3}}},
		"seq 0":                {Last: 9, Gaps: []Range{{0, 3}}},
		"not ascending":        {Last: 20, Gaps: []Range{{8, 9}, {2, 3}}},
		"adjacent":             {Last: 20, Gaps: []Range{{2, 3}, {4, 5}}},
	} {
		if _, err := Decode(st.Encode()); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
	for _, n := range []int{0, 7, 9, 23} {
		if _, err := Decode(make([]byte, n)); err == nil {
			t.Errorf("%d bytes: decoded without error", n)
		}
	}
}
