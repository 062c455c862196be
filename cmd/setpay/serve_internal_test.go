package main

import (
	"context"
	"io"
	"log/slog"
	"testing"

	"github.com/stretchr/testify/assert"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
)

// TestServeUntilDoneStoppedBeforeServing: a stop signal that arrives between the
// listen and gRPC's Serve is a clean stop (exit 0), not "the server has been stopped".
func TestServeUntilDoneStoppedBeforeServing(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the signal has already come when serving starts
	env := &cliEnv{stdout: io.Discard, stderr: io.Discard, logger: slog.New(slog.DiscardHandler)}
	// The interleaving that failed: the stopper finished before Serve began.
	gs := grpc.NewServer()
	gs.Stop()
	assert.NoError(t, serveUntilDone(ctx, env, gs, health.NewServer(), "127.0.0.1:0", "test"))
	// And the usual one: Serve running when the stop comes.
	assert.NoError(t, serveUntilDone(ctx, env, grpc.NewServer(), health.NewServer(), "127.0.0.1:0", "test"))
}
