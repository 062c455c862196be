package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/metrics"
)

// TestHealthzAndReadyz: /healthz answers 200 while the process runs; /readyz follows
// the readiness function, 503 with its one-line reason when not ready.
func TestHealthzAndReadyz(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reg := metrics.New()
	var reason atomic.Value
	reason.Store("")
	reg.SetReadiness(func() error {
		if r := reason.Load().(string); r != "" {
			return errors.New(r)
		}
		return nil
	})
	addr, err := reg.Serve(ctx, "127.0.0.1:0", nil)
	require.NoError(t, err)
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	code, body := get("/healthz")
	assert.Equal(t, http.StatusOK, code, body)
	code, body = get("/readyz")
	assert.Equal(t, http.StatusOK, code, body)

	reason.Store("token \"gw\" unavailable\nsecond line")
	code, body = get("/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "not ready: token \"gw\" unavailable second line\n", body, "one line")
	code, _ = get("/healthz")
	assert.Equal(t, http.StatusOK, code, "alive while not ready")
}
