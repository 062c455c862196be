package main

import (
	"context"
	"crypto"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/wallet"
)

// merchantBed is the demo's gateway and merchant run as an operator runs them: each
// `serve` a process of the built binary, on the demo's tokens and certificates and on
// fresh stores of this test's own. The merchant listens on a fixed port, so that a
// wallet's connection finds it again after a restart.
type merchantBed struct {
	t            *testing.T
	root, dir    string
	env          []string // SOFTHSM2_CONF of the demo's tokens
	merchantCfg  string
	merchantAddr string
	merchant     *exec.Cmd
	merchantLog  *lockedBuffer
	alice        *aliceWallet
}

func newMerchantBed(t *testing.T) *merchantBed {
	t.Helper()
	root := demoFixture(t)
	b := &merchantBed{t: t, root: root, dir: t.TempDir(), env: []string{"SOFTHSM2_CONF=" + filepath.Join(root, "softhsm", "softhsm2.conf")}}
	ctx := context.Background()
	dsn := func(name string) string { return newSQLiteStore(t, b.dir, name) }
	gwCfg := writeDemoGatewayConfig(t, root, b.dir)
	gctx, cancel := context.WithCancel(ctx)
	gw := setpayCmd(gctx, t, b.dir, b.env, "gateway", "serve", "--config", gwCfg)
	gwLog := &lockedBuffer{}
	gw.Stderr = gwLog
	t.Cleanup(func() {
		cancel()
		_ = gw.Wait()
		if t.Failed() {
			t.Logf("gateway stderr:\n%s", gwLog)
		}
	})
	gwAddr := startServer(t, gw, time.Minute)

	mc := readConfig[merchantConfig](t, filepath.Join(root, "merchant.yaml"))
	b.merchantAddr = freeLoopbackAddr(t)
	mc.Listen, mc.MetricsListen, mc.Store, mc.Gateway.Address = b.merchantAddr, "", dsn("merchant.db"), gwAddr
	b.merchantCfg = filepath.Join(b.dir, "merchant.yaml")
	writeConfig(t, b.merchantCfg, mc)
	b.merchantLog = &lockedBuffer{}
	t.Cleanup(func() {
		b.stopMerchant()
		if t.Failed() {
			t.Logf("merchant stderr:\n%s", b.merchantLog)
		}
	})
	b.startMerchant()
	return b
}

// freeLoopbackAddr is a loopback address with a port nobody listens on now.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

// startMerchant starts `merchant serve` on the bed's configuration.
func (b *merchantBed) startMerchant() {
	b.t.Helper()
	require.Nil(b.t, b.merchant, "the merchant runs already")
	// Not tied to a context: the test stops it by signal (stopMerchant, killMerchant).
	b.merchant = setpayCmd(context.Background(), b.t, b.dir, b.env, "merchant", "serve", "--config", b.merchantCfg)
	b.merchant.Stderr = b.merchantLog
	addr := startServer(b.t, b.merchant, time.Minute)
	require.Equal(b.t, b.merchantAddr, addr)
}

// killMerchant ends the merchant with SIGKILL: nothing of its in-memory state
// survives, and it has no chance to clean up.
func (b *merchantBed) killMerchant() {
	b.t.Helper()
	require.NotNil(b.t, b.merchant)
	require.NoError(b.t, b.merchant.Process.Kill())
	_ = b.merchant.Wait()
	b.merchant = nil
}

func (b *merchantBed) stopMerchant() {
	if b.merchant == nil {
		return
	}
	_ = b.merchant.Process.Signal(os.Interrupt)
	_ = b.merchant.Wait()
	b.merchant = nil
}

// setpay runs the binary in the bed's directory with its token environment.
func (b *merchantBed) setpay(args ...string) result {
	b.t.Helper()
	return runSetpay(b.t, b.dir, b.env, args...)
}

// op runs a merchant operator command on the bed's merchant configuration with
// --json, requires exit 0 and decodes its output into out.
func (b *merchantBed) op(out any, cmd ...string) {
	b.t.Helper()
	args := append(append([]string{"merchant"}, cmd...), "--config", b.merchantCfg, "--json")
	r := b.setpay(args...)
	require.Zero(b.t, r.code, "setpay %s\n%s", strings.Join(args, " "), r)
	require.NoError(b.t, json.Unmarshal([]byte(r.stdout), out), "%s", r)
}

// readyMerchant waits for the merchant to be reachable instead of failing at once
// while it restarts: a wallet that retries.
type readyMerchant struct{ setpb.MerchantClient }

func (m readyMerchant) PurchaseInit(ctx context.Context, in *setpb.PInitReq, opts ...grpc.CallOption) (*setpb.Signed, error) {
	return m.MerchantClient.PurchaseInit(ctx, in, append(opts, grpc.WaitForReady(true))...)
}

func (m readyMerchant) Purchase(ctx context.Context, in *setpb.PurchaseRequest, opts ...grpc.CallOption) (*setpb.Signed, error) {
	return m.MerchantClient.Purchase(ctx, in, append(opts, grpc.WaitForReady(true))...)
}

func (m readyMerchant) Inquiry(ctx context.Context, in *setpb.Signed, opts ...grpc.CallOption) (*setpb.Signed, error) {
	return m.MerchantClient.Inquiry(ctx, in, append(opts, grpc.WaitForReady(true))...)
}

// wallet is a wallet of Alice's from the demo (its key in the demo's wallet token),
// in this process, as `wallet buy` builds it, talking to the bed's merchant: a test
// holds a purchase between its steps with it, which `wallet buy` cannot. Like `wallet
// buy`, which is one process per purchase, each call is a new wallet.
func (b *merchantBed) wallet() *wallet.Wallet {
	t := b.t
	t.Helper()
	if b.alice == nil {
		b.openAlice()
	}
	a := b.alice
	v, err := pki.NewVerifier(a.id.Root, a.crls)
	require.NoError(t, err)
	w, err := wallet.New(wallet.Config{Identity: *a.id, Trust: &setproto.Trust{Verifier: v, Intermediates: a.id.Chain, Cache: pki.NewCertCache(64)},
		Merchant: readyMerchant{setpb.NewMerchantClient(a.conn)}, Brand: "SETPay"})
	require.NoError(t, err)
	return w
}

// aliceWallet is what every wallet of Alice's shares: her identity (key in the
// token), the CRLs and the connection to the merchant.
type aliceWallet struct {
	id   *wallet.Identity
	crls *pki.MemoryCRLs
	conn *grpc.ClientConn
}

func (b *merchantBed) openAlice() {
	t := b.t
	t.Helper()
	ctx := context.Background()
	// SoftHSM reads its configuration when the module is first initialised.
	t.Setenv("SOFTHSM2_CONF", filepath.Join(b.root, "softhsm", "softhsm2.conf"))
	module := readConfig[merchantConfig](t, b.merchantCfg).Module
	mod, err := hsm.OpenModule(module, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = mod.Close() })
	tok, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: "setpay-wallet"},
		PIN: hsm.PINSource("file:" + filepath.Join(b.root, "softhsm", "user-pin"))})
	require.NoError(t, err)
	t.Cleanup(func() { _ = tok.Close() })
	pass, err := os.ReadFile(filepath.Join(b.root, "wallet-alice.pass"))
	require.NoError(t, err)
	id, err := wallet.Load(ctx, filepath.Join(b.root, "wallet-alice"), []byte(strings.TrimSpace(string(pass))), wallet.LoadOptions{
		Find: func(ctx context.Context, label string) (crypto.Signer, error) { return tok.FindKey(ctx, label) }})
	require.NoError(t, err)
	crls := pki.NewMemoryCRLs()
	require.NoError(t, loadCRLs(crls, filepath.Join(b.root, "pki", "crls.pem")))
	p, err := pool(filepath.Join(b.root, "pki", "tls-ca.pem"))
	require.NoError(t, err)
	conn, err := grpc.NewClient(b.merchantAddr, grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(nil, p, "127.0.0.1"))))
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	b.alice = &aliceWallet{id: id, crls: crls, conn: conn}
}

// buy makes a whole purchase of offer with a new wallet of Alice's and requires it
// approved.
func (b *merchantBed) buy(offer string) string {
	b.t.Helper()
	w := b.wallet()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	r, err := w.Buy(ctx, offer)
	require.NoError(b.t, err)
	require.True(b.t, r.Approved(), "purchase of %s: %s", offer, r.Result)
	return r.XID
}

// newSQLiteStore creates an empty SQLite store named name in dir, as `setpay store
// init` does, and returns its DSN.
func newSQLiteStore(t *testing.T, dir, name string) string {
	t.Helper()
	d := "sqlite:" + filepath.Join(dir, name)
	db, err := store.Open(context.Background(), d)
	require.NoError(t, err)
	require.NoError(t, db.Close())
	return d
}

// writeDemoGatewayConfig writes the demo's gateway.yaml into dir, listening on a port
// of its own choosing, with no metrics and a fresh store in dir, and returns its path.
func writeDemoGatewayConfig(t *testing.T, root, dir string) string {
	t.Helper()
	gc := readConfig[gatewayConfig](t, filepath.Join(root, "gateway.yaml"))
	gc.Listen, gc.MetricsListen, gc.Store = "127.0.0.1:0", "", newSQLiteStore(t, dir, "gateway.db")
	path := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, path, gc)
	return path
}
