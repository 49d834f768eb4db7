package archive

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzReadArchive: any file given as an archive is refused with an error
// (or read), never a panic, for a proof and for a whole verification.
func FuzzReadArchive(f *testing.F) {
	head := `{"t":"EdgeanchorArchive","v":1,"gateway":"did:ea:0000000000000000000000000000000a","gateway_pub":"","before":"2026-06-01T00:00:00Z","first_gseq":1,"last_gseq":1,"first_batch":1,"last_batch":1,"devices":0,"created":"2026-06-02T00:00:00Z","prev":"0000000000000000000000000000000000000000000000000000000000000000"}` + "\n"
	for _, seed := range []string{
		"",
		"\n",
		"{}\n",
		head,
		head + `{"t":"batch","batch":{"seq":1,"first":1,"last":1,"header":"e30="},"anchor":{}}` + "\n",
		head + `{"t":"record","record":{"gseq":1}}` + "\n",
		head + `{"t":"end","batches":0,"records":0,"devices":0,"sm3":"00"}` + "\n",
		head + `{"t":"device","did":"x","tx":"","proof":null}` + "\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "a.ea")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if b, err := Bundle(path, 1); err == nil && b == nil {
			t.Fatal("no bundle and no error")
		}
		if _, err := Verify(path, nil, 1); err == nil && len(data) > 0 {
			// Only a file with no record at all can verify without a
			// trust file.
			sum, _ := readArchive(path, func(*archiveReader, *Batch) error { return nil })
			if sum == nil || sum.Records != 0 {
				t.Fatalf("an archive with records verified without trust: %+v", sum)
			}
		}
	})
}
