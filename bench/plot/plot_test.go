package plot

import (
	"bytes"
	"image/png"
	"os"
	"path/filepath"
	"testing"
)

func TestLinesWritesAPNG(t *testing.T) {
	path := filepath.Join(t.TempDir(), "curve.png")
	err := Lines(path, "RSS by devices", "devices", "MB",
		Series{Name: "rss", X: []float64{1000, 10000, 20000}, Y: []float64{40, 180, 330}},
		Series{Name: "anon", X: []float64{1000, 10000, 20000}, Y: []float64{30, 150, 290}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not a PNG: %v", err)
	}
	if r := img.Bounds(); r.Dx() < 300 || r.Dy() < 200 {
		t.Fatalf("image is %v, want a readable chart", r)
	}
}

func TestLinesRefusesBadSeries(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bad.png")
	if err := Lines(path, "t", "x", "y", Series{Name: "s", X: []float64{1, 2}, Y: []float64{1}}); err == nil {
		t.Fatal("mismatched series accepted")
	}
	if err := Lines(path, "t", "x", "y"); err == nil {
		t.Fatal("no series accepted")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("a refused chart left a file: %v", err)
	}
}
