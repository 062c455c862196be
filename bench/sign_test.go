package bench

import (
	"context"
	"fmt"
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

func TestChartFormats(t *testing.T) {
	rep := &Report{Results: []Result{
		{Token: "t", Mechanism: "ecdsa-p256", Path: PathRaw, Concurrency: 1, OpsPerSec: 100},
		{Token: "t", Mechanism: "ecdsa-p256", Path: PathRaw, Concurrency: 4, OpsPerSec: 300},
		{Token: "t", Mechanism: "ecdsa-p256", Path: PathSigner, Concurrency: 1, OpsPerSec: 98},
		{Token: "t", Mechanism: "ecdsa-p256", Path: PathSigner, Concurrency: 4, OpsPerSec: 297},
	}}
	panels := rep.SignPanels()
	require.Len(t, panels, 1)
	assert.Len(t, panels[0].Series, 2)
	for _, ext := range []string{"svg", "png", "pdf"} {
		out := t.TempDir() + "/c." + ext
		require.NoError(t, WriteChart(out, panels), ext)
		st, err := os.Stat(out)
		require.NoError(t, err)
		assert.Positive(t, st.Size(), ext)
	}
	assert.Error(t, WriteChart(t.TempDir()+"/noext", panels))
	assert.Error(t, WriteChart(t.TempDir()+"/c.bmp", panels))
}
