package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/wallet"
	"github.com/setpay/setpay/wallet/webui"
)

// runWalletUI serves the wallet as a local web application (package wallet/webui)
// on a loopback address until interrupted.
func runWalletUI(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay wallet ui", env)
	tf := tokenFlagsOn(fs)
	rf := regFlagsOn(fs)
	dir := fs.String("wallet", "./var/wallet", "wallet directory (made by 'setpay wallet register', or created and filled by the UI)")
	listen := fs.String("listen", webui.DefaultListen, "loopback address to listen on (127.0.0.1:PORT or [::1]:PORT; others are refused)")
	merchantCA := fs.String("merchant-ca", "", "PEM of the CA of the merchant's TLS certificate (default: the system's roots)")
	brand := fs.String("brand", "SETPay", "card brand")
	var crlFiles listFlag
	fs.Var(&crlFiles, "crls", "PEM file(s) of current CRLs, read again before every verification (revocation is always checked)")
	crlFromCA := fs.Bool("ca-crls", false, "also fetch every CA's current CRL from the CA service (--ca) before every verification")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageErrorf("unexpected arguments %q", fs.Args())
	}
	// Refused before anything is opened: the wallet is for this machine's browser only.
	l, err := webui.Listen(*listen)
	if err != nil {
		return usageErrorf("--listen: %w", err)
	}
	defer l.Close()

	var pool *x509.CertPool
	if *merchantCA != "" {
		if pool, err = readPool(*merchantCA); err != nil {
			return fmt.Errorf("--merchant-ca: %w", err)
		}
	}
	var tok *hsm.Token
	if tf.selected() || tf.softhsmDir != "" {
		mod, t, err := tf.open(ctx, env)
		if err != nil {
			return err
		}
		defer mod.Close()
		defer t.Close()
		tok = t
	}
	reg := &uiRegistrar{rf: rf, tok: tok}
	defer reg.close()
	var sources []pki.CRLFetcher
	if len(crlFiles) > 0 {
		sources = append(sources, pki.CRLFiles(crlFiles))
	}
	if *crlFromCA {
		sources = append(sources, uiCACRLs{reg})
	}
	merchants := &uiMerchants{pool: pool, conns: map[string]*grpc.ClientConn{}}
	defer merchants.close()
	cfg := webui.Config{Dir: *dir, Brand: *brand, Merchants: merchants.dial, CRLs: sources, Registrar: reg, Logger: env.logger}
	if tok != nil {
		cfg.FindKey = func(ctx context.Context, label string) (crypto.Signer, error) { return tok.FindKey(ctx, label) }
	}
	s, err := webui.New(cfg)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "wallet UI on %s\n", s.URL(l.Addr().String()))
	env.logger.Info("wallet UI serving", "listen", l.Addr().String(), "wallet", *dir)
	return s.Serve(ctx, l)
}

func readPool(path string) (*x509.CertPool, error) {
	cs, err := ca.ReadPEMFile(path)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p, nil
}

// uiMerchants dials merchants' SET services over TLS, one connection per endpoint
// and server name for the life of the UI.
type uiMerchants struct {
	pool  *x509.CertPool
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (m *uiMerchants) dial(_ context.Context, endpoint, serverName string) (setpb.MerchantClient, error) {
	key := endpoint + "|" + serverName
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.conns[key]; ok {
		return setpb.NewMerchantClient(c), nil
	}
	if len(m.conns) >= 64 {
		for k, c := range m.conns {
			_ = c.Close()
			delete(m.conns, k)
			break
		}
	}
	c, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(nil, m.pool, serverName))))
	if err != nil {
		return nil, err
	}
	m.conns[key] = c
	return setpb.NewMerchantClient(c), nil
}

func (m *uiMerchants) close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range m.conns {
		_ = c.Close()
	}
}

// uiRegistrar registers cards with the CA service named by --ca, dialled on first
// use; with token flags the card's key is made in the token, as `wallet register`
// does.
type uiRegistrar struct {
	rf   *regFlags
	tok  *hsm.Token
	mu   sync.Mutex
	c    *ca.Client
	stop func()
}

func (u *uiRegistrar) client() (*ca.Client, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.c != nil {
		return u.c, nil
	}
	c, stop, err := u.rf.dial()
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			err = ue.err
		}
		return nil, fmt.Errorf("CA service %s: %w", u.rf.addr, err)
	}
	u.c, u.stop = c, stop
	return c, nil
}

func (u *uiRegistrar) close() {
	if u.stop != nil {
		u.stop()
	}
}

func (u *uiRegistrar) Register(ctx context.Context, card wallet.CardInput, opts wallet.RegisterOptions) (*wallet.Identity, error) {
	c, err := u.client()
	if err != nil {
		return nil, err
	}
	if u.tok != nil {
		opts.KeyLabel = "wallet-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		k, err := u.tok.GenerateKey(ctx, hsm.KeySpec{Label: opts.KeyLabel, Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
		if err != nil {
			return nil, err
		}
		opts.Key = k
	}
	return wallet.Register(ctx, c, card, opts)
}

// uiCACRLs fetches every CA's CRL from the CA service.
type uiCACRLs struct{ u *uiRegistrar }

func (f uiCACRLs) FetchCRLs(ctx context.Context) ([]*x509.RevocationList, error) {
	c, err := f.u.client()
	if err != nil {
		return nil, err
	}
	return c.CRLFetcher(f.u.rf.addr).FetchCRLs(ctx)
}

func (f uiCACRLs) String() string { return "CA service " + f.u.rf.addr }
