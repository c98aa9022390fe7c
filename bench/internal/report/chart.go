package report

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
)

var colors = map[string]string{
	Veth:    "#8c8c8c",
	Slirp:   "#e39b2e",
	Pasta:   "#4e79a7",
	Clawnet: "#d62728",
	Docker:  "#59a14f",
}

type panel struct {
	title  string
	unit   string
	scale  float64 // values are divided by it before drawing
	groups []string
	keys   []string
}

var panels = []panel{
	{"Throughput (higher is better)", "Gbit/s", 1, []string{"upload", "download", "upload ×4", "download ×4", "HTTP upload"}, []string{UploadGbps, DownloadGbps, Upload4Gbps, Download4Gbps, HTTPUploadGbps}},
	{"Request/response latency (lower is better)", "µs", 1, []string{"p50", "p99", "inbound p50", "inbound p99"}, []string{RRP50us, RRP99us, InboundRRP50us, InboundRRP99us}},
	{"Rates (higher is better)", "thousand per second", 1000, []string{"request/response", "connects", "HTTP 1 KiB POSTs"}, []string{RRPerS, ConnectsPerS, HTTPSmallPerS}},
	// The p50s alone: a loaded machine's p99s, tens of milliseconds,
	// would flatten them (the table has both).
	{"The agent's workloads over HTTPS by name, p50 (lower is better)", "µs", 1, []string{"call: lookup, connect, TLS, GET", "streamed 2 KB chunk"}, []string{HTTPSP50us, StreamP50us}},
	{"Inbound rates, host → published port (higher is better)", "thousand per second", 1000, []string{"request/response", "connects"}, []string{InboundRRPerS, InboundConnectsPerS}},
}

const (
	chartW   = 920
	panelH   = 260
	marginL  = 70
	marginR  = 20
	titleH   = 34
	axisH    = 44
	legendH  = 36
	fontAttr = `font-family="Helvetica, Arial, sans-serif"`
)

// niceCeil rounds v up to a round number (1, 1.5, 2, 2.5, 3, 4, 5, 6 or 8
// times a power of ten) whose fifths make readable grid lines.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10} {
		if v <= m*p*1.0000001 {
			return m * p
		}
	}
	return 10 * p
}

// Chart draws grouped bars of the throughput, latency and rate figures for
// systems as a self-contained SVG. subtitle is printed under the legend.
func Chart(w io.Writer, r Results, systems []string, subtitle string) error {
	var b strings.Builder
	height := legendH + 20 + len(panels)*(panelH+titleH+axisH)
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" %s>`+"\n", chartW, height, chartW, height, fontAttr)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")

	// Legend.
	x := marginL
	for _, s := range systems {
		fmt.Fprintf(&b, `<rect x="%d" y="12" width="14" height="14" fill="%s"/>`, x, colors[s])
		fmt.Fprintf(&b, `<text x="%d" y="24" font-size="13">%s</text>`+"\n", x+20, html.EscapeString(s))
		x += 40 + 9*len(s)
	}
	fmt.Fprintf(&b, `<text x="%d" y="24" font-size="11" fill="#555" text-anchor="end">%s</text>`+"\n", chartW-marginR, html.EscapeString(subtitle))

	y := legendH + 20
	for _, p := range panels {
		drawPanel(&b, p, r, systems, y)
		y += panelH + titleH + axisH
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func drawPanel(b *strings.Builder, p panel, r Results, systems []string, top int) {
	fmt.Fprintf(b, `<text x="%d" y="%d" font-size="15" font-weight="bold">%s</text>`+"\n", marginL, top+18, html.EscapeString(p.title))
	plotTop := top + titleH
	plotH := panelH
	plotW := chartW - marginL - marginR

	var maxV float64
	for _, k := range p.keys {
		for _, s := range systems {
			if v, ok := r.Get(s, k); ok {
				maxV = max(maxV, v/p.scale)
			}
		}
	}
	top5 := niceCeil(maxV)
	// Grid and axis labels.
	for i := 0; i <= 5; i++ {
		v := top5 * float64(i) / 5
		gy := float64(plotTop+plotH) - float64(plotH)*float64(i)/5
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#e0e0e0"/>`, marginL, gy, marginL+plotW, gy)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" font-size="11" text-anchor="end" fill="#444">%s</text>`+"\n", marginL-6, gy+4, trimZeros(v))
	}
	fmt.Fprintf(b, `<text transform="translate(16,%d) rotate(-90)" font-size="12" text-anchor="middle" fill="#444">%s</text>`+"\n", plotTop+plotH/2, html.EscapeString(p.unit))

	groupW := float64(plotW) / float64(len(p.groups))
	barW := min(groupW*0.8/float64(len(systems)), 60)
	for gi, g := range p.groups {
		gx := float64(marginL) + groupW*float64(gi)
		startX := gx + (groupW-barW*float64(len(systems)))/2
		for si, s := range systems {
			bx := startX + barW*float64(si)
			v, ok := r.Get(s, p.keys[gi])
			if !ok {
				fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="9" text-anchor="middle" fill="#999">n/a</text>`+"\n", bx+barW/2, plotTop+plotH-4)
				continue
			}
			v /= p.scale
			h := float64(plotH) * v / top5
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s: %s %s</title></rect>`,
				bx+1, float64(plotTop+plotH)-h, barW-2, h, colors[s], html.EscapeString(s), html.EscapeString(g), format(v), html.EscapeString(p.unit))
			fmt.Fprintf(b, `<text x="%.1f" y="%.1f" font-size="10" text-anchor="middle" fill="#222">%s</text>`+"\n", bx+barW/2, float64(plotTop+plotH)-h-3, format(v))
		}
		fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="12" text-anchor="middle">%s</text>`+"\n", gx+groupW/2, plotTop+plotH+18, html.EscapeString(g))
	}
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444"/>`+"\n", marginL, plotTop+plotH, marginL+plotW, plotTop+plotH)
}

func trimZeros(v float64) string {
	s := fmt.Sprintf("%.2f", v)
	s = strings.TrimRight(s, "0")
	return strings.TrimSuffix(s, ".")
}
