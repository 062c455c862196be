package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestHealthFollowsTheStore: a store that cannot be reached makes the service NOT
// SERVING with "store unreachable" (for /readyz), and it serves again by itself once
// the store answers. (The token's part runs through the binary in
// TestGatewayRecoversItsTokenDirectoryMovedAwayAndBack.)
func TestHealthFollowsTheStore(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var down atomic.Bool
	down.Store(true)
	w := newHealthWatcher(slog.New(slog.NewTextHandler(io.Discard, nil)), func(context.Context) error {
		if down.Load() {
			return errors.New("dial tcp 127.0.0.1:5432: connection refused")
		}
		return nil
	})
	w.interval = 5 * time.Millisecond
	go w.run(ctx)
	hs := health.NewServer()
	w.bind(hs)
	status := func() healthpb.HealthCheckResponse_ServingStatus {
		res, err := hs.Check(ctx, &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
		return res.GetStatus()
	}
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, status())
	require.Error(t, w.ready())
	assert.Equal(t, "store unreachable", w.ready().Error(), "one line, no address")

	down.Store(false)
	require.Eventually(t, func() bool { return w.ready() == nil }, time.Minute, time.Millisecond)
	assert.Equal(t, healthpb.HealthCheckResponse_SERVING, status())

	down.Store(true)
	require.Eventually(t, func() bool { return w.ready() != nil }, time.Minute, time.Millisecond)
	assert.Equal(t, healthpb.HealthCheckResponse_NOT_SERVING, status())
}
