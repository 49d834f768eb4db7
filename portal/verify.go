package portal

import (
	"fmt"
	"io"
	"net/http"

	"github.com/edgeanchor/edgeanchor/anchor/evidence"
)

// maxUpload bounds a form: one bundle and the form's fields.
const maxUpload = evidence.MaxBundleBytes + 1<<16

// stepView is one verification step as the page shows it.
type stepView struct {
	N      int // 1-based; 0 for the trust file check
	Name   string
	Detail string
	OK     bool
	Delay  int // animation delay class
}

type verifyView struct {
	Ran      bool
	Record   string
	Steps    []stepView
	OK       bool
	Summary  string
	Problem  string
	TrustHdr string
}

func stepNumber(step string) int {
	for i, s := range evidence.Steps {
		if s == step {
			return i + 1
		}
	}
	return 0
}

func (s *Server) verifyPage(w http.ResponseWriter, r *http.Request) {
	s.render(w, r, "verify", page{Title: "Verify a proof bundle", Nav: "verify", Data: verifyView{TrustHdr: s.trustLine()}})
}

func (s *Server) trustLine() string {
	n, noun := s.trust.Validators.Size(), "validators"
	if n == 1 {
		noun = "validator"
	}
	return fmt.Sprintf("chain %s, %d %s (hash %X)", s.trust.ChainID, n, noun, s.trust.Validators.Hash())
}

// verifyPost verifies the uploaded or pasted bundle here, in the portal's
// process, against the portal's trust file, with anchor's Bundle.Verify.
func (s *Server) verifyPost(w http.ResponseWriter, r *http.Request) {
	v := verifyView{Ran: true, TrustHdr: s.trustLine()}
	data, err := bundleFromForm(r)
	if err == nil && len(data) == 0 {
		err = fmt.Errorf("choose a bundle file or paste a bundle")
	}
	var b *evidence.Bundle
	if err == nil {
		b, err = evidence.ParseBundle(data)
	}
	if err != nil {
		v.Problem = err.Error()
		v.Steps = []stepView{{Name: "bundle file", Detail: err.Error()}}
		s.render(w, r, "verify", page{Title: "Verify a proof bundle", Nav: "verify", Data: v})
		return
	}
	v.Record = fmt.Sprintf("record gseq %d of gateway %s (device %s seq %d)", b.Record.GSeq, b.Record.Gateway, b.Record.DID, b.Record.Seq)
	got, err := b.Verify(s.trust, func(step, detail string, err error) {
		sv := stepView{N: stepNumber(step), Name: step, Detail: detail, OK: err == nil, Delay: len(v.Steps)}
		if err != nil {
			sv.Detail = err.Error()
		}
		v.Steps = append(v.Steps, sv)
	})
	if err != nil {
		v.Problem = err.Error()
	} else {
		v.OK = true
		v.Summary = fmt.Sprintf("record %s seq %d is in batch %d, anchored at height %d no later than %s",
			got.Record.DID, got.Record.Seq, got.Header.Seq, got.AnchorHeight, got.AnchoredBy)
	}
	s.render(w, r, "verify", page{Title: "Verify a proof bundle", Nav: "verify", Data: v})
}

// bundleFromForm returns the uploaded file, or else the pasted text.
func bundleFromForm(r *http.Request) ([]byte, error) {
	if r.MultipartForm != nil {
		if fh := r.MultipartForm.File["bundle"]; len(fh) > 0 && fh[0].Size > 0 {
			if fh[0].Size > evidence.MaxBundleBytes {
				return nil, fmt.Errorf("bundle file: %d bytes, more than %d", fh[0].Size, evidence.MaxBundleBytes)
			}
			f, err := fh[0].Open()
			if err != nil {
				return nil, fmt.Errorf("bundle file: %w", err)
			}
			defer f.Close()
			return io.ReadAll(io.LimitReader(f, evidence.MaxBundleBytes+1))
		}
	}
	return []byte(r.PostFormValue("text")), nil
}
