package gateway_test

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/gateway"
	"github.com/setpay/setpay/internal/testenv"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/softhsm/softhsmtest"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/system/systemtest"
)

// countingIssuer is the issuer both replicas share: it counts every call and the key
// it was asked with, and can be made to fail or to hold a call (a slow, or hung,
// issuer) before passing it to the ledger.
type countingIssuer struct {
	next gateway.Issuer
	mu   sync.Mutex
	keys []string
	// hold, if set, is taken by the next call: it signals entered, then waits for
	// release before asking the ledger.
	hold *holdCall
	fail error // the next call fails with it, without asking the ledger
}

type holdCall struct{ entered, release chan struct{} }

func (c *countingIssuer) Authorize(key, pan, expiry string, amount int64, currency string, now time.Time) (gateway.Decision, error) {
	c.mu.Lock()
	c.keys = append(c.keys, key)
	h, fail := c.hold, c.fail
	c.hold, c.fail = nil, nil
	c.mu.Unlock()
	if fail != nil {
		return gateway.Decision{}, fail
	}
	if h != nil {
		close(h.entered)
		<-h.release
	}
	return c.next.Authorize(key, pan, expiry, amount, currency, now)
}

func (c *countingIssuer) calls() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.keys...)
}

// recordingGateway lets a merchant make a real authorization request: it hands it
// to replica A and keeps the envelope, which the test then resends as a retry.
type recordingGateway struct {
	setpb.GatewayClient // only Authorize is used
	to                  *gateway.Gateway
	sent                atomic.Pointer[setpb.Enveloped]
}

func (r *recordingGateway) Authorize(ctx context.Context, in *setpb.Enveloped, _ ...grpc.CallOption) (*setpb.Enveloped, error) {
	r.sent.Store(in)
	if r.to == nil {
		return nil, setproto.Errorf(setpb.Reason_GATEWAY_UNAVAILABLE, "recording only")
	}
	return r.to.Authorize(ctx, in)
}

// replicas is one system with two gateway instances ("replicas" A and B) on two
// handles of one store, sharing one counting issuer; B's clock can be moved on.
type replicas struct {
	b      *system.Bed
	issuer *countingIssuer
	// A and B wait only briefly on each other's live claims: the tests that hold the
	// issuer expect the refusal, whatever the wait.
	a, bb *gateway.Gateway
	dbB   *store.Store
	skew  atomic.Int64 // B's clock is time.Now() + skew
	lease time.Duration
}

func newReplicas(t *testing.T, dsn func(t *testing.T) string) *replicas {
	t.Helper()
	ctx := context.Background()
	caTok, tok := softhsmtest.NewToken(t), softhsmtest.NewToken(t)
	gwDSN := dsn(t)
	b, err := system.Build(ctx, system.Config{
		CARoot: caTok, CA: caTok, Gateway: softhsmtest.NewToken(t), Merchant: softhsmtest.NewToken(t), Wallet: tok, TLS: tok,
		GatewayDSN: gwDSN, MerchantDSN: "sqlite:" + filepath.Join(t.TempDir(), "mer.db"),
		GatewayID: "gw-1", MerchantID: "shop-1", Offers: systemtest.Offers(), Cards: systemtest.Cards(),
	}, nil, nil)
	require.NoError(t, err)
	t.Cleanup(b.Close)
	dbB, err := store.Open(ctx, gwDSN) // replica B's own handle on the shared store
	require.NoError(t, err)
	t.Cleanup(func() { _ = dbB.Close() })
	r := &replicas{b: b, issuer: &countingIssuer{next: b.Ledger}, dbB: dbB, lease: 10 * time.Second}
	mk := func(db store.DB, clock func() time.Time) *gateway.Gateway {
		g, err := gateway.New(gateway.Config{Sign: b.GatewayEnt.Sign, KXCert: b.GatewayEnt.KXCert, KXKey: b.GatewayEnt.KXKey,
			Trust: b.NewTrust(), Store: db, PANHashKey: b.PANHasher, Issuer: r.issuer, ClaimLease: r.lease, ClaimWait: 20 * time.Millisecond, Clock: clock})
		require.NoError(t, err)
		return g
	}
	r.a = mk(b.GatewayDB, time.Now)
	r.bb = mk(dbB, func() time.Time { return time.Now().Add(time.Duration(r.skew.Load())) })
	return r
}

// authRequest starts a fresh purchase of offer by Alice and returns its XID and
// what the merchant authorizes.
func (r *replicas) authRequest(t *testing.T, offer string, sale bool) (string, merchant.AuthInput) {
	t.Helper()
	ctx := context.Background()
	w, err := r.b.Wallet(systemtest.Alice)
	require.NoError(t, err)
	s, err := w.Start(ctx, offer)
	require.NoError(t, err)
	req, err := w.Prepare(s)
	require.NoError(t, err)
	in := merchant.AuthInput{XID: s.OI.GetXid(), Amount: s.OI.GetAmount(), Currency: s.OI.GetCurrency(), Sale: sale,
		OIHash: setproto.Hash(req.GetOrderInfo()), PIEnvelope: req.GetPiEnvelope(), DualSignature: req.GetDualSignature()}
	return s.OI.GetXid(), in
}

// envelope has the merchant build the authorization request for in, without sending it.
func (r *replicas) envelope(t *testing.T, in merchant.AuthInput) *setpb.Enveloped {
	t.Helper()
	rec := &recordingGateway{}
	m, err := r.b.NewMerchant(context.Background(), r.b.MerchantEnt, r.b.MerchantDB, rec)
	require.NoError(t, err)
	_, err = m.Authorize(context.Background(), in)
	require.Error(t, err, "recording only")
	env := rec.sent.Load()
	require.NotNil(t, env)
	return env
}

func (r *replicas) balance(t *testing.T) int64 {
	t.Helper()
	bal, ok := r.b.Ledger.Balance(systemtest.Cards()[systemtest.Alice].PAN)
	require.True(t, ok)
	return bal
}

func requireReason(t *testing.T, err error, want setpb.Reason, code codes.Code) {
	t.Helper()
	require.Error(t, err)
	assert.Equal(t, want.String(), setproto.ReasonOf(err).String(), "error: %v", err)
	assert.Equal(t, code, status.Code(err), "error: %v", err)
}

// backends runs fn on a gateway store in SQLite and in PostgreSQL.
func backends(t *testing.T, fn func(t *testing.T, r *replicas)) {
	t.Run("sqlite", func(t *testing.T) {
		fn(t, newReplicas(t, func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "gw.db") }))
	})
	t.Run("postgres", func(t *testing.T) {
		fn(t, newReplicas(t, func(t *testing.T) string { return testenv.PostgresSchema(t) }))
	})
}

// TestReplicaRetryAsksTheIssuerOnce (issue 13, replicated gateways): the same
// authorization sent to replica A, then retried on replica B (one store), reaches
// the issuer once and gets the same answer bytes; so do concurrent duplicates on
// both; other content for the XID is REPLAY and reaches no issuer; a request that
// finds another's claim live is refused retryably and the issuer is not asked.
func TestReplicaRetryAsksTheIssuerOnce(t *testing.T) {
	backends(t, func(t *testing.T, r *replicas) {
		ctx := context.Background()
		start := r.balance(t)

		t.Run("sequential retry on the other replica", func(t *testing.T) {
			before, bal := len(r.issuer.calls()), r.balance(t)
			xid, in := r.authRequest(t, "book", false)
			env := r.envelope(t, in)
			outA, err := r.a.Authorize(ctx, env)
			require.NoError(t, err)
			outB, err := r.bb.Authorize(ctx, env)
			require.NoError(t, err)
			outA2, err := r.a.Authorize(ctx, env)
			require.NoError(t, err)
			assert.Equal(t, outA.GetCms(), outB.GetCms(), "the retry on B gets A's answer bytes")
			assert.Equal(t, outA.GetCms(), outA2.GetCms())
			assert.Equal(t, []string{gateway.AuthKey("shop-1", xid)}, r.issuer.calls()[before:], "the issuer asked once")
			assert.Equal(t, bal-25_00, r.balance(t), "funds held once")
			_, stored, err := r.dbB.StoredResponse(ctx, "gateway/auth", gateway.AuthKey("shop-1", xid))
			require.NoError(t, err)
			assert.Equal(t, outA.GetCms(), stored, "the answer sent is the answer stored")

			// The same XID with other content (a sale now): REPLAY on either replica,
			// and the issuer is not asked.
			in.Sale = true
			other := r.envelope(t, in)
			for name, g := range map[string]*gateway.Gateway{"A": r.a, "B": r.bb} {
				_, err := g.Authorize(ctx, other)
				requireReason(t, err, setpb.Reason_REPLAY, codes.AlreadyExists)
				assert.Len(t, r.issuer.calls(), before+1, "replica %s asked the issuer for a replay", name)
			}
		})

		t.Run("retry while the other replica asks the issuer", func(t *testing.T) {
			before := len(r.issuer.calls())
			xid, in := r.authRequest(t, "book", false)
			env := r.envelope(t, in)
			h := &holdCall{entered: make(chan struct{}), release: make(chan struct{})}
			r.issuer.mu.Lock()
			r.issuer.hold = h
			r.issuer.mu.Unlock()
			type result struct {
				out *setpb.Enveloped
				err error
			}
			done := make(chan result, 1)
			go func() {
				out, err := r.a.Authorize(ctx, env)
				done <- result{out, err}
			}()
			<-h.entered // A holds the claim and is at the issuer
			_, err := r.bb.Authorize(ctx, env)
			requireReason(t, err, setpb.Reason_GATEWAY_UNAVAILABLE, codes.Unavailable)
			assert.Contains(t, err.Error(), "in progress, retry")
			_, err = r.a.Authorize(ctx, env)
			requireReason(t, err, setpb.Reason_GATEWAY_UNAVAILABLE, codes.Unavailable)
			close(h.release)
			resA := <-done
			require.NoError(t, resA.err)
			outB, err := r.bb.Authorize(ctx, env) // the merchant's retry
			require.NoError(t, err)
			assert.Equal(t, resA.out.GetCms(), outB.GetCms())
			assert.Equal(t, []string{gateway.AuthKey("shop-1", xid)}, r.issuer.calls()[before:])
		})

		t.Run("concurrent duplicates on both replicas", func(t *testing.T) {
			before, bal := len(r.issuer.calls()), r.balance(t)
			xid, in := r.authRequest(t, "coffee", true)
			env := r.envelope(t, in)
			const n = 6
			outs := make([][]byte, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				g := r.a
				if i%2 == 1 {
					g = r.bb
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					out, err := g.Authorize(ctx, env)
					outs[i], errs[i] = out.GetCms(), err
				}()
			}
			wg.Wait()
			_, stored, err := r.b.GatewayDB.StoredResponse(ctx, "gateway/auth", gateway.AuthKey("shop-1", xid))
			require.NoError(t, err, "one answer stored")
			for i := range n {
				if errs[i] != nil {
					requireReason(t, errs[i], setpb.Reason_GATEWAY_UNAVAILABLE, codes.Unavailable)
					out, err := r.bb.Authorize(ctx, env) // its retry
					require.NoError(t, err)
					outs[i] = out.GetCms()
				}
				assert.Equal(t, stored, outs[i], "request %d", i)
			}
			assert.Equal(t, []string{gateway.AuthKey("shop-1", xid)}, r.issuer.calls()[before:], "the issuer asked once")
			assert.Equal(t, bal-15_00, r.balance(t), "funds held once")
		})

		t.Run("a failed issuer call frees the claim for the retry", func(t *testing.T) {
			before, bal := len(r.issuer.calls()), r.balance(t)
			xid, in := r.authRequest(t, "book", false)
			env := r.envelope(t, in)
			r.issuer.mu.Lock()
			r.issuer.fail = errors.New("issuer link down")
			r.issuer.mu.Unlock()
			_, err := r.a.Authorize(ctx, env)
			requireReason(t, err, setpb.Reason_INTERNAL, codes.Internal)
			_, _, err = r.b.GatewayDB.StoredResponse(ctx, "gateway/auth", gateway.AuthKey("shop-1", xid))
			assert.ErrorIs(t, err, store.ErrNotFound, "nothing stored for a failed authorization")
			out, err := r.bb.Authorize(ctx, env) // at once: A released its claim
			require.NoError(t, err)
			require.NotEmpty(t, out.GetCms())
			key := gateway.AuthKey("shop-1", xid)
			assert.Equal(t, []string{key, key}, r.issuer.calls()[before:], "asked again, with the same key")
			assert.Equal(t, bal-25_00, r.balance(t), "funds held once")
		})

		assert.Equal(t, start-25_00-25_00-15_00-25_00, r.balance(t))
		_, err := r.b.GatewayDB.VerifyAudit(ctx)
		require.NoError(t, err, "the audit chain of both replicas verifies")
	})
}

// TestReplicaTakesOverAClaimAfterItsLease (issue 13): replica A claims an
// authorization and hangs at the issuer (as if it had crashed after its claim
// committed). Until the lease runs out B refuses retryably without asking; after it B
// takes the claim over and asks the issuer again with the SAME key, so funds are held
// once; when A wakes, it answers the bytes B stored.
func TestReplicaTakesOverAClaimAfterItsLease(t *testing.T) {
	backends(t, func(t *testing.T, r *replicas) {
		ctx := context.Background()
		bal := r.balance(t)
		xid, in := r.authRequest(t, "book", false)
		env := r.envelope(t, in)
		key := gateway.AuthKey("shop-1", xid)
		h := &holdCall{entered: make(chan struct{}), release: make(chan struct{})}
		r.issuer.mu.Lock()
		r.issuer.hold = h
		r.issuer.mu.Unlock()
		type result struct {
			out *setpb.Enveloped
			err error
		}
		done := make(chan result, 1)
		go func() {
			out, err := r.a.Authorize(ctx, env)
			done <- result{out, err}
		}()
		<-h.entered
		defer func() {
			select {
			case <-h.release:
			default:
				close(h.release)
			}
		}()

		r.skew.Store(int64(r.lease - time.Second)) // B's clock: the lease still runs
		_, err := r.bb.Authorize(ctx, env)
		requireReason(t, err, setpb.Reason_GATEWAY_UNAVAILABLE, codes.Unavailable)
		assert.Equal(t, []string{key}, r.issuer.calls())

		r.skew.Store(int64(r.lease + time.Second)) // the lease ran out
		outB, err := r.bb.Authorize(ctx, env)
		require.NoError(t, err)
		assert.Equal(t, []string{key, key}, r.issuer.calls(), "B asked the issuer again, with the same key")
		assert.Equal(t, bal-25_00, r.balance(t), "funds held once")

		close(h.release) // A wakes up after B answered
		resA := <-done
		require.NoError(t, resA.err)
		assert.Equal(t, outB.GetCms(), resA.out.GetCms(), "A answers the stored bytes, not its own")
		outA, err := r.a.Authorize(ctx, env)
		require.NoError(t, err)
		assert.Equal(t, outB.GetCms(), outA.GetCms())
		_, stored, err := r.dbB.StoredResponse(ctx, "gateway/auth", key)
		require.NoError(t, err)
		assert.Equal(t, outB.GetCms(), stored)
		assert.Len(t, r.issuer.calls(), 2)
	})
}

func TestClaimLeaseConfig(t *testing.T) {
	assert.Equal(t, 30*time.Second, gateway.DefaultClaimLease)
	assert.Equal(t, 2*time.Second, gateway.DefaultClaimWait)
	_, err := gateway.New(gateway.Config{ClaimLease: -time.Second})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "claim lease")
	_, err = gateway.New(gateway.Config{ClaimWait: -time.Second})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "claim wait")
}
