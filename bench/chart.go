package bench

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// The charts are drawn by a small SVG writer of its own rather than a plotting
// library: the bench ships inside the one setpay binary that also holds keys, and a
// plotting library brings fonts, LaTeX and PDF writers into it for a few lines.

// pathColors keep a path's colour the same in every panel and every chart.
var pathColors = map[string]color.RGBA{
	PathRaw:      {R: 0x44, G: 0x44, B: 0x44, A: 0xff},
	PathCrypto11: {R: 0x1f, G: 0x77, B: 0xb4, A: 0xff},
	PathSigner:   {R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
	PathGRPC:     {R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
	PathSoftware: {R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
}

// Series is one line of a chart.
type Series struct {
	Name  string
	Color color.RGBA
	X, Y  []float64
}

// Panel is one plot: a title, axis labels and its lines. X is drawn on a log scale
// (concurrency doubles from one point to the next), Y linearly from zero.
type Panel struct {
	Title, XLabel, YLabel string
	Series                []Series
}

// The geometry of one panel, in SVG user units (pixels).
const (
	panelW, panelH                  = 480, 340
	marginL, marginR, marginT, marB = 64, 16, 36, 48
	legendLine                      = 16
)

// WriteChart renders panels side by side into an SVG file.
func WriteChart(file string, panels []Panel) error {
	if len(panels) == 0 {
		return fmt.Errorf("bench: nothing to chart")
	}
	if !strings.EqualFold(strings.TrimPrefix(fileExt(file), "."), "svg") {
		return fmt.Errorf("bench: chart file %q: only .svg is written", file)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`+"\n",
		panelW*len(panels), panelH, panelW*len(panels), panelH)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	for i, pn := range panels {
		if err := drawPanel(&b, float64(i*panelW), pn); err != nil {
			return err
		}
	}
	b.WriteString("</svg>\n")
	if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
		return fmt.Errorf("bench: write chart: %w", err)
	}
	return nil
}

func fileExt(file string) string {
	if i := strings.LastIndexByte(file, '.'); i >= 0 && !strings.ContainsRune(file[i:], '/') {
		return file[i:]
	}
	return ""
}

func drawPanel(b *bytes.Buffer, x0 float64, pn Panel) error {
	var xs []float64
	maxY := 0.0
	for _, s := range pn.Series {
		if len(s.X) != len(s.Y) {
			return fmt.Errorf("bench: chart series %q has %d x and %d y values", s.Name, len(s.X), len(s.Y))
		}
		for i, x := range s.X {
			if x <= 0 || math.IsNaN(x) || math.IsInf(x, 0) || math.IsNaN(s.Y[i]) || math.IsInf(s.Y[i], 0) {
				return fmt.Errorf("bench: chart series %q: point (%v, %v) cannot be drawn on a log x axis", s.Name, x, s.Y[i])
			}
			xs = append(xs, x)
			maxY = max(maxY, s.Y[i])
		}
	}
	slices.Sort(xs)
	xs = slices.Compact(xs)
	// Leave the top of the plot for the legend, as many lines as there are series.
	legendH := float64(legendLine * len(pn.Series))
	left, right := x0+marginL, x0+panelW-marginR
	top, bottom := float64(marginT)+legendH, float64(panelH-marB)
	yTop := niceCeil(maxY)
	px := func(x float64) float64 {
		if len(xs) < 2 {
			return (left + right) / 2
		}
		lo, hi := math.Log(xs[0]), math.Log(xs[len(xs)-1])
		return left + (math.Log(x)-lo)/(hi-lo)*(right-left)
	}
	py := func(y float64) float64 { return bottom - y/yTop*(bottom-top) }

	fmt.Fprintf(b, `<text x="%.1f" y="20" text-anchor="middle" font-size="13" font-weight="bold">%s</text>`+"\n", x0+panelW/2, esc(pn.Title))
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, bottom, right, bottom)
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", left, top, left, bottom)
	for _, x := range xs {
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", px(x), bottom+14, strconv.FormatFloat(x, 'f', -1, 64))
	}
	for i := 0; i <= 4; i++ {
		y := yTop * float64(i) / 4
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#ddd"/>`+"\n", left, py(y), right, py(y))
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-4, py(y)+4, strconv.FormatFloat(y, 'g', 4, 64))
	}
	fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", (left+right)/2, panelH-12, esc(pn.XLabel))
	fmt.Fprintf(b, `<text transform="translate(%.1f %.1f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", x0+16, (top+bottom)/2, esc(pn.YLabel))
	for i, s := range pn.Series {
		col := fmt.Sprintf("#%02x%02x%02x", s.Color.R, s.Color.G, s.Color.B)
		var pts []string
		for j := range s.X {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.X[j]), py(s.Y[j])))
		}
		fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`+"\n", col, strings.Join(pts, " "))
		for j := range s.X {
			fmt.Fprintf(b, `<circle cx="%.1f" cy="%.1f" r="2.5" fill="%s"/>`+"\n", px(s.X[j]), py(s.Y[j]), col)
		}
		ly := float64(marginT) + float64(i*legendLine) + 4
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="2"/>`+"\n", left+8, ly, left+28, ly, col)
		fmt.Fprintf(b, `<text x="%.1f" y="%.1f">%s</text>`+"\n", left+34, ly+4, esc(s.Name))
	}
	return nil
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten, so the axis ends on a round
// number.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// SignPanels makes one panel per token × mechanism: ops/s against concurrency per path.
func (r *Report) SignPanels() []Panel {
	type key struct{ tok, mech string }
	var order []key
	byKey := map[key]map[string]*Series{}
	for _, x := range r.Results {
		k := key{x.Token, x.Mechanism}
		if byKey[k] == nil {
			byKey[k] = map[string]*Series{}
			order = append(order, k)
		}
		s := byKey[k][x.Path]
		if s == nil {
			s = &Series{Name: x.Path, Color: pathColors[x.Path]}
			byKey[k][x.Path] = s
		}
		s.X = append(s.X, float64(x.Concurrency))
		s.Y = append(s.Y, x.OpsPerSec)
	}
	var out []Panel
	for _, k := range order {
		pn := Panel{Title: k.mech + " on " + k.tok, XLabel: "concurrency (goroutines)", YLabel: "operations / s"}
		for _, p := range Paths {
			if s := byKey[k][p]; s != nil {
				pn.Series = append(pn.Series, *s)
			}
		}
		out = append(out, pn)
	}
	return out
}
