package crashtest

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/setpay/setpay/gateway"
	"github.com/setpay/setpay/internal/testenv"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/softhsm/softhsmtest"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/wallet"
)

// child is one run of the gateway process.
type child struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// proc starts, kills and restarts the gateway process on one address.
type proc struct {
	cfg    string
	lis    *os.File // the listening socket every child inherits
	env    []string
	logDir string
	mu     sync.Mutex
	cur    *child
	starts int
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.starts++
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = p.env
	cmd.ExtraFiles = []*os.File{p.lis} // listenerFD in the child
	logf, err := os.Create(filepath.Join(p.logDir, fmt.Sprintf("gateway-%d.log", p.starts)))
	if err != nil {
		return err
	}
	cmd.Stderr = logf
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start gateway process: %w", err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		log, _ := os.ReadFile(logf.Name())
		return fmt.Errorf("gateway process did not start: %q %v\n%s", line, err, log)
	}
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(c.done)
	}()
	p.cur = c
	return nil
}

// kill sends SIGKILL: no deferred function, no flush, no graceful stop.
func (p *proc) kill() {
	p.mu.Lock()
	c := p.cur
	p.mu.Unlock()
	if c == nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// listen opens the gateway's loopback socket on port 0 and returns its address and a
// descriptor for the children. The test holds it open across kills: the address never
// goes back to the system for another process to take, and connections made while no
// child runs wait in its backlog for the next one.
func listen(t *testing.T) (string, *os.File) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	f, err := l.(*net.TCPListener).File()
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return l.Addr().String(), f
}

// directMerchant lets a wallet call a merchant in-process.
type directMerchant struct{ m *merchant.Merchant }

func (d directMerchant) PurchaseInit(ctx context.Context, in *setpb.PInitReq, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return d.m.PurchaseInit(ctx, in)
}

func (d directMerchant) Purchase(ctx context.Context, in *setpb.PurchaseRequest, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return d.m.Purchase(ctx, in)
}

func (d directMerchant) Inquiry(ctx context.Context, in *setpb.Signed, _ ...grpc.CallOption) (*setpb.Signed, error) {
	return d.m.Inquiry(ctx, in)
}

// retry runs op until it does not fail for want of the gateway.
func retry[T any](ctx context.Context, op func() (T, error)) (T, int, error) {
	for tries := 1; ; tries++ {
		v, err := op()
		if err == nil || setproto.ReasonOf(err) != setpb.Reason_GATEWAY_UNAVAILABLE {
			return v, tries, err
		}
		select {
		case <-ctx.Done():
			return v, tries, fmt.Errorf("gave up after %d tries: %w (last: %v)", tries, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// gatewayDSN is a fresh PostgreSQL schema where a server is configured (always in
// CI), else an SQLite file.
func gatewayDSN(t *testing.T) string {
	if os.Getenv(testenv.PostgresEnv) == "" && !testenv.Required("postgres") {
		return "sqlite:" + filepath.Join(t.TempDir(), "gw.db")
	}
	return testenv.PostgresSchema(t)
}

func TestGatewaySurvivesSIGKILL(t *testing.T) {
	softhsmtest.Require(t, softhsmtest.SoftHSMDir)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()
	seed := time.Now().UnixNano()
	rng := mrand.New(mrand.NewPCG(uint64(seed), 7))
	t.Logf("seed %d", seed)

	tok, gwTok, merTok := softhsmtest.NewToken(t), softhsmtest.NewToken(t), softhsmtest.NewToken(t)
	dsn := gatewayDSN(t)
	cards := []system.CardSpec{{Name: "alice", PAN: "4111111111111111", Expiry: "203012", Balance: 1_000_000_00}}
	offers := []merchant.Offer{{ID: "book", Description: "The SET book", Amount: 25_00, Currency: "EUR"}}
	b, err := system.Build(ctx, system.Config{CARoot: tok, CA: tok, Gateway: gwTok, Merchant: merTok, Wallet: tok, TLS: tok,
		GatewayDSN: dsn, MerchantDSN: "sqlite:" + filepath.Join(t.TempDir(), "mer.db"),
		GatewayID: "gw-1", MerchantID: "shop-1", Offers: offers, Cards: cards}, nil, nil)
	require.NoError(t, err)
	t.Cleanup(b.Close)

	// The gateway processes: same token directory (SOFTHSM2_CONF), same token and keys,
	// same store, each on one loopback socket it inherits on every restart, so the
	// merchant's connection comes back. On PostgreSQL two replicas share the store, as in production: each has its
	// own audit chainer, and either may be killed at any moment.
	replicas := 1
	if strings.HasPrefix(dsn, "postgres") {
		replicas = 2
	}
	dir := t.TempDir()
	cfg := childConfig{Token: gwTok.Label(), SignLabel: b.GatewayEnt.SignKey.Label(), KXLabel: b.GatewayEnt.KXKey.Label(),
		SignChain: string(pki.EncodePEM(b.GatewayEnt.Sign.Certificates()...)), KXCert: string(pki.EncodePEM(b.GatewayEnt.KXCert)),
		Root: string(pki.EncodePEM(b.H.Root.Certificate())), CACerts: string(pki.EncodePEM(b.CACerts()...)),
		CRLs: string(pki.EncodeCRLPEM(b.CRLs.All()...)), DSN: dsn, PANKey: b.PANKey.Label(),
		Cards: b.LedgerCards}
	// One merchant (same entity and store) and wallet per replica.
	var procs []*proc
	var merchants []*merchant.Merchant
	var wallets []*wallet.Wallet
	for r := range replicas {
		addr, lisFile := listen(t)
		js, err := json.Marshal(cfg)
		require.NoError(t, err)
		cfgPath := filepath.Join(dir, fmt.Sprintf("child-%d.json", r))
		require.NoError(t, os.WriteFile(cfgPath, js, 0o600))
		logDir := filepath.Join(dir, fmt.Sprintf("replica-%d", r))
		require.NoError(t, os.Mkdir(logDir, 0o700))
		p := &proc{cfg: cfgPath, lis: lisFile, logDir: logDir,
			env: append(append(os.Environ(), softhsmtest.Env(t)...), childEnv+"="+cfgPath, pinEnv+"="+softhsmtest.PIN)}
		require.NoError(t, p.start())
		t.Cleanup(p.kill)
		procs = append(procs, p)

		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.5,
				MaxDelay: 200 * time.Millisecond}, MinConnectTimeout: 2 * time.Second}))
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		m, err := b.NewMerchant(ctx, b.MerchantEnt, b.MerchantDB, setpb.NewGatewayClient(conn))
		require.NoError(t, err)
		w, err := wallet.New(wallet.Config{Identity: b.Cardholders[0].Identity, Trust: b.NewTrust(), Merchant: directMerchant{m}, Brand: system.Brand})
		require.NoError(t, err)
		merchants, wallets = append(merchants, m), append(wallets, w)
	}
	starts := func() int {
		n := 0
		for _, p := range procs {
			p.mu.Lock()
			n += p.starts
			p.mu.Unlock()
		}
		return n
	}

	// The killer: SIGKILL at random points until the work is done, then restart.
	var kills atomic.Int32
	stop := make(chan struct{})
	killerDone := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				killerDone <- nil
				return
			case <-time.After(time.Duration(100+rng.IntN(500)) * time.Millisecond):
			}
			p := procs[rng.IntN(len(procs))]
			p.kill()
			kills.Add(1)
			if err := p.start(); err != nil {
				killerDone <- err
				cancel() // the workers give up
				return
			}
		}
	}()

	// The work: purchases (authorization only), then two partial captures, a credit
	// and a partial credit reversal each, from several goroutines, every operation
	// retried with the same request until the gateway answers.
	// The work goes on until the killer has struck minKills times (at least
	// minPurchases purchases, at most maxPurchases): a fixed amount of work finished
	// between two kills on a fast, idle machine, and then nothing was tested.
	const minPurchases, maxPurchases, minKills, workers = 8, 400, 3, 4
	type result struct {
		xid, authCode string
		answers       map[string][]byte // rrpid -> envelope received
	}
	results := make([]result, maxPurchases)
	var tries atomic.Int64
	jobs := make(chan int)
	errs := make(chan error, maxPurchases)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				m, w := merchants[i%replicas], wallets[i%replicas]
				errs <- func() error {
					s, err := w.Start(ctx, "book")
					if err != nil {
						return err
					}
					req, err := w.Prepare(s)
					if err != nil {
						return err
					}
					signed, n, err := retry(ctx, func() (*setpb.Signed, error) { return m.Purchase(ctx, req) })
					tries.Add(int64(n))
					if err != nil {
						return fmt.Errorf("purchase: %w", err)
					}
					rc, err := w.VerifyResponse(ctx, s, signed)
					if err != nil {
						return err
					}
					if !rc.Approved() {
						return fmt.Errorf("purchase %s: %s", rc.XID, rc.Result)
					}
					r := result{xid: rc.XID, authCode: rc.AuthCode, answers: map[string][]byte{}}
					ops := []struct {
						rrpid string
						call  func(context.Context, merchant.LifecycleInput) (*merchant.LifecycleResult, error)
						in    merchant.LifecycleInput
					}{
						{"cap1-" + rc.XID, m.Capture, merchant.LifecycleInput{Amount: 10_00}},
						{"cap2-" + rc.XID, m.Capture, merchant.LifecycleInput{Amount: 15_00}},
						{"cred-" + rc.XID, m.Credit, merchant.LifecycleInput{Amount: 5_00}},
						{"crev-" + rc.XID, m.ReverseCredit, merchant.LifecycleInput{Amount: 2_00, TargetID: "cred-" + rc.XID}},
					}
					for _, op := range ops {
						in := op.in
						in.RRPID, in.XID = op.rrpid, rc.XID
						lr, n, err := retry(ctx, func() (*merchant.LifecycleResult, error) { return op.call(ctx, in) })
						tries.Add(int64(n))
						if err != nil {
							return fmt.Errorf("%s: %w", op.rrpid, err)
						}
						r.answers[op.rrpid] = lr.Envelope
					}
					results[i] = r
					return nil
				}()
			}
		}()
	}
	fed := make(chan int, 1)
	go func() {
		i := 0
		for ; i < maxPurchases; i++ {
			if i >= minPurchases && kills.Load() >= minKills {
				break
			}
			jobs <- i
		}
		close(jobs)
		fed <- i
	}()
	wg.Wait()
	purchases := <-fed
	results = results[:purchases]
	close(stop)
	require.NoError(t, <-killerDone)
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}

	// Every answer the merchant received is the one the gateway stored; nothing was
	// done twice; the totals add up.
	checked := 0
	var captured, credited int64
	for _, r := range results {
		for rrpid, env := range r.answers {
			_, stored, err := b.GatewayDB.StoredResponse(ctx, gateway.LifecycleScope, gateway.LifecycleRequestID("shop-1", rrpid))
			require.NoError(t, err, rrpid)
			sa, err := setproto.ParseGatewayStoredAnswer(stored)
			require.NoError(t, err)
			assert.Equal(t, env, sa.GetEnvelope(), "answer to %s is the stored one", rrpid)
			checked++
		}
		require.NoError(t, b.GatewayDB.View(ctx, func(ctx context.Context, tx store.Tx) error {
			a, err := tx.GetAuthorization(ctx, "shop-1", r.xid)
			if err != nil {
				return err
			}
			if _, _, err := b.GatewayDB.StoredResponse(ctx, "gateway/auth",
				base64.RawURLEncoding.EncodeToString(setproto.Hash([]byte("shop-1\x00"+r.xid)))); err != nil {
				return fmt.Errorf("stored authorization answer of %s: %w", r.xid, err)
			}
			// the merchant's receipt carries the auth code of the stored authorization,
			// not of a decision remade after a restart
			assert.Equal(t, a.AuthCode, r.authCode, "authorization %s", r.xid)
			assert.Equal(t, store.AuthCaptured, a.Status)
			assert.Equal(t, int64(25_00), a.CapturedTotal)
			assert.Equal(t, int64(3_00), a.CreditedTotal)
			caps, err := tx.ListCaptures(ctx, "shop-1", r.xid)
			if err != nil {
				return err
			}
			creds, err := tx.ListCredits(ctx, "shop-1", r.xid)
			if err != nil {
				return err
			}
			revs, err := tx.ListReversals(ctx, "shop-1", r.xid)
			if err != nil {
				return err
			}
			assert.Len(t, caps, 2)
			assert.Len(t, creds, 1)
			assert.Len(t, revs, 1)
			for _, c := range caps {
				captured += c.Amount
			}
			for _, c := range creds {
				credited += c.Amount - c.ReversedAmount
			}
			return nil
		}))
		checked++ // the authorization
	}
	assert.Equal(t, int64(purchases*25_00), captured)
	assert.Equal(t, int64(purchases*3_00), credited)
	// Records a killed gateway committed but had not chained are linked now;
	// then the whole audit log must verify.
	_, err = b.GatewayDB.ChainAudit(ctx)
	require.NoError(t, err)
	rep, err := b.GatewayDB.CheckAudit(ctx)
	require.NoError(t, err)
	assert.Zero(t, rep.Unchained)
	n := rep.Verified
	assert.GreaterOrEqual(t, kills.Load(), int32(3), "the gateway was killed several times")
	t.Logf("crash test: %d gateway replicas, %d SIGKILLs, %d gateway starts, %d operations checked (%d authorizations, %d lifecycle answers), %d requests sent, %d audit records verified",
		replicas, kills.Load(), starts(), checked, purchases, checked-purchases, tries.Load(), n)
}
