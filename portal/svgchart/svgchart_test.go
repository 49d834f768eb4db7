package svgchart

import (
	"math"
	"reflect"
	"testing"
)

func TestNiceMax(t *testing.T) {
	for _, tc := range []struct{ v, want float64 }{
		{-3, 1}, {0, 1}, {0.3, 0.5}, {1, 1}, {1.5, 2}, {3, 5}, {7, 10}, {10, 10}, {11, 20}, {250, 500}, {999, 1000},
	} {
		if got := NiceMax(tc.v); math.Abs(got-tc.want) > 1e-12 {
			t.Errorf("NiceMax(%v) = %v, want %v", tc.v, got, tc.want)
		}
	}
}

func TestTrimFloat(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 5: "5", 2.5: "2.5", 1.25: "1.25", 0.333: "0.33", 1200: "1200"} {
		if got := TrimFloat(v); got != want {
			t.Errorf("TrimFloat(%v) = %q, want %q", v, got, want)
		}
	}
}

// TestBarsGeometry: stacks grow up from the axis in series order, scaled
// to the round maximum; a zero value draws nothing.
func TestBarsGeometry(t *testing.T) {
	c := Bars("x", "T", "u", []string{"a", "b"}, []Column{{"c1", []float64{1, 3}}, {"c2", []float64{2, 0}}}, "none")
	// Sums 4 and 2: the axis goes to 5; plot 840 x 170 from (50, 10);
	// two steps of 420, bars 336 wide.
	want := Chart{ID: "x", Title: "T", Unit: "u", W: 900, H: 220,
		Bars: []Bar{
			{X: 92, Y: 146, W: 336, H: 34, Class: "c0", Title: "c1 · a: 1 u"},
			{X: 92, Y: 44, W: 336, H: 102, Class: "c1", Title: "c1 · b: 3 u"},
			{X: 512, Y: 112, W: 336, H: 68, Class: "c0", Title: "c2 · a: 2 u"},
		},
		YTicks: []Tick{{46, 180, "0"}, {46, 137.5, "1.25"}, {46, 95, "2.5"}, {46, 52.5, "3.75"}, {46, 10, "5"}},
		XTicks: []Tick{{260, 194, "c1"}, {680, 194, "c2"}},
		Legend: []LegendItem{{"c0", "a"}, {"c1", "b"}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("chart\n got %+v\nwant %+v", c, want)
	}
	e := Bars("x", "T", "u", []string{"a"}, nil, "none")
	if e.Empty != "none" || e.Bars != nil || e.YTicks != nil || len(e.Legend) != 1 {
		t.Fatalf("empty chart %+v", e)
	}
}

// TestBarsThinsLabels: of many columns about eight are labelled.
func TestBarsThinsLabels(t *testing.T) {
	var cols []Column
	for i := range 40 {
		cols = append(cols, Column{Label: TrimFloat(float64(i)), Values: []float64{1}})
	}
	c := Bars("x", "T", "u", []string{"a"}, cols, "")
	if len(c.Bars) != 40 || len(c.XTicks) != 8 || c.XTicks[1].Label != "5" {
		t.Fatalf("%d bars, %d x labels (%+v)", len(c.Bars), len(c.XTicks), c.XTicks)
	}
}
