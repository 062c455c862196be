package bench

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/hsm"
)

// The bench package sets up its own throwaway SoftHSM token instead of using
// softhsmtest: crypto11 must be the first to initialise the library in the process.
var quiet = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))

// TestRunSignReportsEveryPath checks the report's shape on a real token: every path,
// every concurrency, positive rates, JSON written. It asserts no speeds.
func TestRunSignReportsEveryPath(t *testing.T) {
	spec, cleanup, err := ThrowawaySoftHSM(quiet)
	require.NoError(t, err)
	defer cleanup()
	mechs, err := ParseMechanisms("ecdsa-p256,rsa2048-oaep-decrypt,ecdh-p256")
	require.NoError(t, err)
	rep, err := RunSign(context.Background(), SignConfig{
		Tokens: []TokenSpec{spec}, Mechanisms: mechs, Concurrency: []int{1, 2},
		Duration: 100 * time.Millisecond, Rounds: 2, Logger: quiet,
	})
	require.NoError(t, err)
	got := map[string]bool{}
	for _, r := range rep.Results {
		got[fmt.Sprintf("%s/%s/%d", r.Mechanism, r.Path, r.Concurrency)] = true
		assert.Positive(t, r.OpsPerSec, "%+v", r)
		assert.Positive(t, r.P50us, "%+v", r)
		assert.LessOrEqual(t, r.P50us, r.P99us, "%+v", r)
		assert.Zero(t, r.Errors, "%+v", r)
	}
	for _, c := range []int{1, 2} {
		for _, p := range Paths {
			assert.True(t, got[fmt.Sprintf("ecdsa-p256/%s/%d", p, c)], "ecdsa-p256 %s c=%d", p, c)
			assert.True(t, got[fmt.Sprintf("rsa2048-oaep-decrypt/%s/%d", p, c)], "oaep %s c=%d", p, c)
		}
		// crypto11 and the remote signer have no ECDH; the other three paths do.
		for _, p := range []string{PathRaw, PathSigner, PathSoftware} {
			assert.True(t, got[fmt.Sprintf("ecdh-p256/%s/%d", p, c)], "ecdh %s c=%d", p, c)
		}
		assert.False(t, got[fmt.Sprintf("ecdh-p256/%s/%d", PathCrypto11, c)])
	}
	out := t.TempDir() + "/b.json"
	require.NoError(t, rep.WriteJSON(out))
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	for _, field := range []string{`"token"`, `"mechanism"`, `"path"`, `"concurrency"`, `"ops_per_sec"`, `"p50_us"`, `"p99_us"`} {
		assert.Contains(t, string(b), field)
	}
}

func TestParseMechanismsRefusesUnknown(t *testing.T) {
	_, err := ParseMechanisms("ecdsa-p256,dsa-1024")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "dsa-1024")
	_, err = ParseMechanisms("")
	assert.Error(t, err)
}

// BenchmarkPaths runs each access path with b.RunParallel (GOMAXPROCS goroutines,
// or more with -cpu), one session per goroutine where the path has sessions. Compare
// paths side by side with benchstat.
func BenchmarkPaths(b *testing.B) {
	spec, cleanup, err := ThrowawaySoftHSM(quiet)
	require.NoError(b, err)
	defer cleanup()
	mechs, err := ParseMechanisms("ecdsa-p256,rsa2048-pss,rsa2048-oaep-decrypt")
	require.NoError(b, err)
	ctx := context.Background()
	cfg := SignConfig{Tokens: []TokenSpec{spec}, Mechanisms: mechs, Concurrency: []int{1}, Duration: time.Second, Paths: Paths, Logger: quiet}
	mods := map[string]*hsm.Module{}
	t, err := openTarget(ctx, spec, cfg, mods, 64)
	require.NoError(b, err)
	defer func() {
		t.shutdown(ctx)
		for _, m := range mods {
			_ = m.Close()
		}
		_ = t.c11.Close()
	}()
	for _, ks := range t.keys {
		for _, path := range Paths {
			b.Run(ks.mech.Name+"/"+path, func(b *testing.B) {
				_, closeFn, err := ks.newOp(path, t.mod, t.tok.Info().Slot)
				closeFn()
				if err != nil {
					b.Skip(err) // e.g. crypto11 has no ECDH
				}
				b.RunParallel(func(pb *testing.PB) {
					o, closeFn, err := ks.newOp(path, t.mod, t.tok.Info().Slot)
					defer closeFn()
					if err != nil {
						b.Error(err)
						return
					}
					for pb.Next() {
						if err := o(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}

func TestChartIsSVG(t *testing.T) {
	rep := &Report{Results: []Result{
		{Token: "t", Mechanism: "ecdsa-p256", Path: PathRaw, Concurrency: 1, OpsPerSec: 100},
		{Token: "t", Mechanism: "ecdsa-p256", Path: PathRaw, Concurrency: 4, OpsPerSec: 300},
		{Token: "t", Mechanism: "ecdsa-p256", Path: PathSigner, Concurrency: 1, OpsPerSec: 98},
		{Token: "t", Mechanism: "ecdsa-p256", Path: PathSigner, Concurrency: 4, OpsPerSec: 297},
	}}
	panels := rep.SignPanels()
	require.Len(t, panels, 1)
	assert.Len(t, panels[0].Series, 2)
	out := t.TempDir() + "/c.svg"
	require.NoError(t, WriteChart(out, panels))
	b, err := os.ReadFile(out)
	require.NoError(t, err)
	// Well-formed XML with one polyline per series and the legend names.
	dec := xml.NewDecoder(bytes.NewReader(b))
	lines := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "the chart must be well-formed XML")
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "polyline" {
			lines++
		}
	}
	assert.Equal(t, 2, lines)
	assert.Contains(t, string(b), ">"+PathSigner+"<")
	assert.Contains(t, string(b), "ecdsa-p256 on t")

	tests := []struct {
		name   string
		file   string
		panels []Panel
	}{
		{"no extension", t.TempDir() + "/noext", panels},
		{"not svg", t.TempDir() + "/c.png", panels},
		{"nothing to chart", t.TempDir() + "/c.svg", nil},
		{"x not positive", t.TempDir() + "/c.svg", []Panel{{Series: []Series{{Name: "s", X: []float64{0}, Y: []float64{1}}}}}},
		{"lengths differ", t.TempDir() + "/c.svg", []Panel{{Series: []Series{{Name: "s", X: []float64{1, 2}, Y: []float64{1}}}}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Error(t, WriteChart(tt.file, tt.panels))
		})
	}
}
