package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
)

// serveUntilDone serves gs on listen until ctx ends, then reports NOT_SERVING (so
// balancers stop sending), drains for up to 10 s and stops.
func serveUntilDone(ctx context.Context, env *cliEnv, gs *grpc.Server, hs *health.Server, listen, what string) error {
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "%s listening on %s\n", what, lis.Addr())
	go func() {
		<-ctx.Done()
		hs.Shutdown()
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(10 * time.Second):
			gs.Stop()
		}
	}()
	err = gs.Serve(lis)
	if errors.Is(err, grpc.ErrServerStopped) && ctx.Err() != nil {
		// Stopped before Serve began (a signal right after the listen): that is the
		// same clean stop as one a moment later, not a failure.
		_ = lis.Close()
		return nil
	}
	return err
}
