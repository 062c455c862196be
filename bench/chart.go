package bench

import (
	"fmt"
	"image/color"
	"os"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	// Register the output formats WriteChart offers.
	_ "gonum.org/v1/plot/vg/vgimg"
	_ "gonum.org/v1/plot/vg/vgpdf"
	_ "gonum.org/v1/plot/vg/vgsvg"
)

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

// Panel is one plot: a title, axis labels and its lines.
type Panel struct {
	Title, XLabel, YLabel string
	Series                []Series
}

// WriteChart renders panels side by side into file; the format follows the extension
// (.svg, .png, .pdf).
func WriteChart(file string, panels []Panel) error {
	if len(panels) == 0 {
		return fmt.Errorf("bench: nothing to chart")
	}
	const w, h = 5 * vg.Inch, 3.6 * vg.Inch
	dot := strings.LastIndexByte(file, '.')
	if dot < 0 {
		return fmt.Errorf("bench: chart file %q needs an extension (.svg, .png, .pdf)", file)
	}
	format := file[dot+1:]
	c, err := draw.NewFormattedCanvas(w*vg.Length(len(panels)), h, format)
	if err != nil {
		return fmt.Errorf("bench: chart format %q: %w", format, err)
	}
	tiles := draw.Tiles{Rows: 1, Cols: len(panels)}
	canvases := plot.Align([][]*plot.Plot{plots(panels)}, tiles, draw.New(c))
	for i, p := range plots(panels) {
		p.Draw(canvases[0][i])
	}
	return saveCanvas(c, file)
}

func plots(panels []Panel) []*plot.Plot {
	var out []*plot.Plot
	for _, pn := range panels {
		p := plot.New()
		p.Title.Text = pn.Title
		p.X.Label.Text = pn.XLabel
		p.Y.Label.Text = pn.YLabel
		p.X.Scale = plot.LogScale{}
		p.Legend.Top = true
		p.Y.Min = 0
		ticks := map[float64]bool{}
		maxY := 0.0
		for _, s := range pn.Series {
			for i := range s.X {
				ticks[s.X[i]] = true
				maxY = max(maxY, s.Y[i])
			}
		}
		var marks plot.ConstantTicks
		for x := range ticks {
			marks = append(marks, plot.Tick{Value: x, Label: strconv.FormatFloat(x, 'f', -1, 64)})
		}
		p.X.Tick.Marker = marks
		p.Y.Max = maxY * 1.45 // room for the legend above the lines
		for _, s := range pn.Series {
			xys := make(plotter.XYs, len(s.X))
			for i := range s.X {
				xys[i] = plotter.XY{X: s.X[i], Y: s.Y[i]}
			}
			line, points, err := plotter.NewLinePoints(xys)
			if err != nil {
				continue
			}
			line.Color, points.Color = s.Color, s.Color
			line.Width = vg.Points(1.5)
			p.Add(line, points)
			p.Legend.Add(s.Name, line, points)
		}
		out = append(out, p)
	}
	return out
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

func saveCanvas(c vg.CanvasWriterTo, file string) error {
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("bench: chart: %w", err)
	}
	if _, err := c.WriteTo(f); err != nil {
		_ = f.Close()
		return fmt.Errorf("bench: write chart %s: %w", file, err)
	}
	return f.Close()
}
