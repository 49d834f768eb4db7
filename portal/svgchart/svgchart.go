// Package svgchart lays out server-rendered SVG bar charts: stacked bars
// per column, a y axis of four steps up to a round maximum, and x labels
// thinned to about eight. The portal's templates draw what it returns.
package svgchart

import (
	"fmt"
	"math"
	"strings"
)

// Chart geometry (SVG user units).
const (
	chartW, chartH         = 900.0, 220.0
	padL, padR, padT, padB = 50.0, 10.0, 10.0, 40.0
)

// Chart is a server-rendered SVG bar chart: stacked bars per column.
type Chart struct {
	ID, Title, Unit string
	W, H            float64
	Bars            []Bar
	YTicks          []Tick
	XTicks          []Tick
	Legend          []LegendItem
	Empty           string
}

// Bar is one rectangle of a stack.
type Bar struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

// Tick is an axis label at (X, Y).
type Tick struct {
	X, Y  float64
	Label string
}

// LegendItem names the series drawn with Class.
type LegendItem struct{ Class, Name string }

// Column is one x position: its label and one value per series.
type Column struct {
	Label  string
	Values []float64
}

// NiceMax is the least of 1, 2 or 5 times a power of ten that is at
// least v (1 for v <= 0).
func NiceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// Bars lays out stacked bars for cols (series named by series); with no
// columns the chart shows empty instead.
func Bars(id, title, unit string, series []string, cols []Column, empty string) Chart {
	c := Chart{ID: id, Title: title, Unit: unit, W: chartW, H: chartH}
	for i, s := range series {
		c.Legend = append(c.Legend, LegendItem{Class: fmt.Sprintf("c%d", i%6), Name: s})
	}
	if len(cols) == 0 {
		c.Empty = empty
		return c
	}
	top := 0.0
	for _, col := range cols {
		sum := 0.0
		for _, v := range col.Values {
			sum += v
		}
		top = max(top, sum)
	}
	top = NiceMax(top)
	plotW, plotH := chartW-padL-padR, chartH-padT-padB
	step := plotW / float64(len(cols))
	bw := max(step*0.8, 1)
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		c.YTicks = append(c.YTicks, Tick{X: padL - 4, Y: padT + plotH - plotH*float64(i)/4, Label: TrimFloat(v)})
	}
	every := max(1, len(cols)/8)
	for i, col := range cols {
		x := padL + float64(i)*step + (step-bw)/2
		y := padT + plotH
		for k, v := range col.Values {
			if v <= 0 {
				continue
			}
			h := plotH * v / top
			y -= h
			c.Bars = append(c.Bars, Bar{X: x, Y: y, W: bw, H: h, Class: fmt.Sprintf("c%d", k%6),
				Title: fmt.Sprintf("%s · %s: %s %s", col.Label, series[k], TrimFloat(v), unit)})
		}
		if i%every == 0 {
			c.XTicks = append(c.XTicks, Tick{X: x + bw/2, Y: chartH - padB + 14, Label: col.Label})
		}
	}
	return c
}

// TrimFloat formats v with at most two decimals and no trailing zeros.
func TrimFloat(v float64) string {
	if v == math.Trunc(v) {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}
