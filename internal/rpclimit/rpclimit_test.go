package rpclimit_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/setpay/setpay/internal/clock"
	"github.com/setpay/setpay/internal/rpclimit"
)

// TestMain fails the package if a test leaves a goroutine behind (a server, a
// connection).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// newClock is a manual clock: tests move time, they never wait for it.
func newClock() *clock.Manual { return clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)) }

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  rpclimit.Config
		ok   bool
	}{
		{"zero disables", rpclimit.Config{}, true},
		{"rate and burst", rpclimit.Config{Rate: 5, Burst: 10}, true},
		{"negative rate", rpclimit.Config{Rate: -1}, false},
		{"negative burst", rpclimit.Config{Rate: 1, Burst: -1}, false},
		{"negative clients", rpclimit.Config{Rate: 1, MaxClients: -1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := rpclimit.New(tt.cfg)
			if tt.ok {
				assert.NoError(t, err)
			} else {
				assert.Error(t, err)
			}
		})
	}
}

func TestTokenBucket(t *testing.T) {
	tests := []struct {
		name  string
		rate  float64
		burst int
		// steps: advance the clock, then try n requests and expect ok of them to pass
		steps []struct {
			advance time.Duration
			n, ok   int
		}
	}{
		{"burst then refill", 2, 4, []struct {
			advance time.Duration
			n, ok   int
		}{{0, 6, 4}, {500 * time.Millisecond, 3, 1}, {time.Second, 3, 2}, {time.Hour, 10, 4}}},
		{"default burst is the rate", 3, 0, []struct {
			advance time.Duration
			n, ok   int
		}{{0, 5, 3}, {400 * time.Millisecond, 2, 1}}},
		{"fractional rate", 0.5, 1, []struct {
			advance time.Duration
			n, ok   int
		}{{0, 2, 1}, {time.Second, 1, 0}, {time.Second, 1, 1}}},
		{"disabled", 0, 0, []struct {
			advance time.Duration
			n, ok   int
		}{{0, 1000, 1000}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClock()
			l, err := rpclimit.New(rpclimit.Config{Rate: tt.rate, Burst: tt.burst, Clock: c.Now})
			require.NoError(t, err)
			for i, s := range tt.steps {
				c.Add(s.advance)
				got := 0
				for range s.n {
					if l.Allow("client") {
						got++
					}
				}
				assert.Equal(t, s.ok, got, "step %d", i)
			}
		})
	}
}

func TestClientsAreSeparateAndBounded(t *testing.T) {
	c := newClock()
	l, err := rpclimit.New(rpclimit.Config{Rate: 1, Burst: 1, MaxClients: 3, Clock: c.Now})
	require.NoError(t, err)
	assert.True(t, l.Allow("a"))
	assert.False(t, l.Allow("a"))
	assert.True(t, l.Allow("b"), "another client has its own bucket")
	for _, k := range []string{"c", "d", "e", "f"} {
		assert.True(t, l.Allow(k))
	}
	assert.Equal(t, 3, l.Clients(), "the table never holds more than MaxClients")
	// "a" was the least recently seen and was forgotten: it starts with a full bucket.
	assert.True(t, l.Allow("a"))
	assert.LessOrEqual(t, l.Clients(), 3)
}

// echo is a tiny service: a unary method and a stream, from the health package so no
// proto needs generating.
func serve(t *testing.T, lim *rpclimit.Limiter) *grpc.ClientConn {
	t.Helper()
	s := grpc.NewServer(lim.ServerOptions()...)
	h := health.NewServer()
	healthpb.RegisterHealthServer(s, h)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func TestInterceptorsOverGRPC(t *testing.T) {
	c := newClock()
	lim, err := rpclimit.New(rpclimit.Config{Rate: 1, Burst: 2, Clock: c.Now, Detail: wrapperspb.String("slow down")})
	require.NoError(t, err)
	conn := serve(t, lim)
	hc := healthpb.NewHealthClient(conn)
	ctx := context.Background()

	for i := range 2 {
		_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
		require.NoError(t, err, "call %d within the burst", i)
	}
	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
	st := status.Convert(err)
	assert.Equal(t, codes.ResourceExhausted, st.Code())
	require.Len(t, st.Details(), 1)
	assert.Equal(t, "slow down", st.Details()[0].(*wrapperspb.StringValue).GetValue())

	// A stream takes a token when it opens: refused the same way.
	w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	require.NoError(t, err)
	_, err = w.Recv()
	assert.Equal(t, codes.ResourceExhausted, status.Code(err))

	// The peer is keyed by host, so a second connection from the same host shares it.
	c.Add(time.Second)
	_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
	assert.NoError(t, err, "one token refilled")
	assert.Equal(t, 1, lim.Clients())
}

func TestExempt(t *testing.T) {
	lim, err := rpclimit.New(rpclimit.Config{Rate: 1, Burst: 1, Exempt: rpclimit.HealthExempt, Clock: newClock().Now})
	require.NoError(t, err)
	hc := healthpb.NewHealthClient(serve(t, lim))
	for range 5 {
		_, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{})
		require.NoError(t, err)
	}
	assert.Equal(t, 0, lim.Clients())
}

func TestClientKey(t *testing.T) {
	_, err := rpclimit.ClientKey(context.Background())
	assert.ErrorIs(t, err, rpclimit.ErrNoPeer)
	tests := []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 4242}, "addr:192.0.2.7"},
		{&net.TCPAddr{IP: net.ParseIP("2001:DB8::1"), Port: 1}, "addr:2001:db8::1"},
		{&net.UnixAddr{Name: "/run/x.sock", Net: "unix"}, "addr:/run/x.sock"},
	}
	for _, tt := range tests {
		got, err := rpclimit.ClientKey(peer.NewContext(context.Background(), &peer.Peer{Addr: tt.addr}))
		require.NoError(t, err)
		assert.Equal(t, tt.want, got)
	}
}

func TestConcurrentAllowIsExact(t *testing.T) {
	lim, err := rpclimit.New(rpclimit.Config{Rate: 1, Burst: 50, Clock: newClock().Now})
	require.NoError(t, err)
	var mu sync.Mutex
	passed := 0
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if lim.Allow("same") {
					mu.Lock()
					passed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	assert.Equal(t, 50, passed, "a frozen clock lets exactly the burst through")
}

// TestLimit is the go-grpc-middleware ratelimit.Limiter face of the limiter: the same
// buckets, keying and refusal status (detail included).
func TestLimit(t *testing.T) {
	lim, err := rpclimit.New(rpclimit.Config{Rate: 1, Burst: 1, Clock: newClock().Now, Detail: wrapperspb.String("slow down")})
	require.NoError(t, err)
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("192.0.2.7"), Port: 1}})
	require.NoError(t, lim.Limit(ctx))
	st := status.Convert(lim.Limit(ctx))
	assert.Equal(t, codes.ResourceExhausted, st.Code())
	require.Len(t, st.Details(), 1)
	assert.Equal(t, "slow down", st.Details()[0].(*wrapperspb.StringValue).GetValue())
	other := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.ParseIP("192.0.2.8"), Port: 1}})
	assert.NoError(t, lim.Limit(other), "another host has its own bucket")
}
