package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/setpay/setpay/gateway"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/rpclimit"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/metrics"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
	"github.com/setpay/setpay/store"
	"github.com/setpay/setpay/wallet"
)

// partyConfig is what gateway and merchant configurations share: the token, the keys
// by pkcs11: URI, certificates, trust, TLS and the store.
type partyConfig struct {
	// module or softhsm_dir; token, token_serial or token_slot; pin_source; max_sessions
	tokenConfig `yaml:",inline"`

	Listen   string   `yaml:"listen"`
	SignKey  string   `yaml:"sign_key"`  // pkcs11: URI of the signature key
	SignCert string   `yaml:"sign_cert"` // PEM: certificate, then issuing CA and brand
	KXKey    string   `yaml:"kx_key"`    // pkcs11: URI of the key-exchange key
	KXCert   string   `yaml:"kx_cert"`   // PEM
	Root     string   `yaml:"root"`      // PEM of the SET root
	CAChain  []string `yaml:"ca_chain"`  // PEM files of brand, CCA, MCA, PCA
	CRLs     []string `yaml:"crls"`      // PEM files of current CRLs, read again every crl_refresh and on SIGHUP
	// CRLRefresh is how often the crls files are read again (a Go duration, "5m" when
	// empty); SIGHUP reads them at once. A newer CRL a CA signed replaces the one
	// held; a file that fails to read keeps the last good CRLs in use.
	CRLRefresh string `yaml:"crl_refresh"`
	// CRLCA, when its address is set, is the CA service asked for every CA's CRL
	// (GetCRL) every crl_refresh and on SIGHUP, besides any crls files.
	CRLCA      crlCAConfig `yaml:"crl_ca,omitempty"`
	Store      string      `yaml:"store"` // sqlite:... or postgres://...
	OAEPSHA256 bool        `yaml:"oaep_sha256"`
	TLS        struct {
		Cert     string `yaml:"cert"`      // PEM chain, leaf first
		Key      string `yaml:"key"`       // pkcs11: URI of the TLS key in the token
		ClientCA string `yaml:"client_ca"` // PEM; the gateway requires client certificates from it
	} `yaml:"tls"`
	Limits limitsConfig `yaml:"limits"`
	// MetricsListen serves Prometheus /metrics on its own port ("" for none).
	MetricsListen string `yaml:"metrics_listen"`
	// role is the service's SET role (gateway or merchant), set by its serve command;
	// the start-up self-check requires its certificates to carry it.
	role pki.Role `yaml:"-"`
}

// startMetrics watches the party's token and serves /metrics when configured.
// It also starts keeping the CRLs current (every crl_refresh and on SIGHUP) and
// exposes their nextUpdate and the service's certificate expiry.
func startMetrics(ctx context.Context, env *cliEnv, c *partyConfig, r *running) (*metrics.Registry, error) {
	reg := metrics.New()
	reg.WatchToken(r.tok)
	r.health = newHealthWatcher(env.logger, storePing(r.db), r.tok)
	reg.SetReadiness(r.health.ready)
	go r.health.run(ctx)
	if err := registerBuildInfo(reg.Prometheus()); err != nil {
		return nil, err
	}
	certs := certCollector{"signature": r.sign.Cert, "key-exchange": r.kxc}
	if err := errors.Join(reg.Prometheus().Register(crlCollector{r.crls}), reg.Prometheus().Register(certs)); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	runCRLs(ctx, env, r.crls)
	if c.MetricsListen != "" {
		addr, err := reg.Serve(ctx, c.MetricsListen, env.logger)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(env.stdout, "metrics on http://%s/metrics\n", addr)
	}
	return reg, nil
}

// limitsConfig bounds what one client may ask of a service. Clients are told apart by
// their verified TLS certificate (merchants at the gateway) or else their host
// (wallets at the merchant).
type limitsConfig struct {
	MaxMessageBytes      int     `yaml:"max_message_bytes"`      // 0: 4 MiB
	MaxConcurrentStreams uint32  `yaml:"max_concurrent_streams"` // per connection; 0: gRPC's default
	RatePerSecond        float64 `yaml:"rate_per_second"`        // per client; 0: no rate limit
	RateBurst            int     `yaml:"rate_burst"`             // 0: ceil(rate)
	RateMaxClients       int     `yaml:"rate_max_clients"`       // buckets kept; 0: rpclimit's default
	Reflection           bool    `yaml:"reflection"`             // serve gRPC reflection (off by default)
}

// serverLimits turns the config into the server's limits; detail goes with every
// rate-limit refusal so SET clients read a reason.
func (l limitsConfig) serverLimits(detail *setpb.ErrorDetail) tlsrpc.ServerLimits {
	max := l.MaxMessageBytes
	if max <= 0 {
		max = 4 << 20
	}
	sl := tlsrpc.ServerLimits{MaxRecvMsgBytes: max, MaxConcurrentStreams: l.MaxConcurrentStreams,
		Rate: rpclimit.Config{Rate: l.RatePerSecond, Burst: l.RateBurst, MaxClients: l.RateMaxClients}, Reflection: l.Reflection}
	if detail != nil {
		sl.Rate.Detail = detail
	}
	return sl
}

type gatewayConfig struct {
	partyConfig `yaml:",inline"`
	// PANHashKey is the pkcs11: URI of the key of stored PAN hashes: a MAC key in the
	// party's token (setpay hsm keygen --alg hmac-sha256 --usage mac --label pan-hash).
	PANHashKey string `yaml:"pan_hash_key"`
	// LegacyPANHashKeySource is the old software key file; it is refused, with the way
	// out, rather than silently ignored (docs/protocol.md, "Stored PAN data").
	LegacyPANHashKeySource string `yaml:"pan_hash_key_source,omitempty"`
	// The issuer stand-in's cards, inline or in a YAML file of their own (the issuer's
	// data, which a real gateway never holds).
	Ledger     []gateway.Card `yaml:"ledger,omitempty"`
	LedgerFile string         `yaml:"ledger_file,omitempty"`
}

type merchantConfig struct {
	partyConfig `yaml:",inline"`
	Brand       string           `yaml:"brand"`
	Offers      []merchant.Offer `yaml:"offers"`
	// ChallengeKey is the pkcs11: URI of the key the merchant derives its purchase
	// challenges from: a MAC key in the merchant's token (setpay hsm keygen --alg
	// hmac-sha256 --usage mac --label merchant-challenge). A purchase initiated before
	// a restart completes after it; replicas sharing the key accept each other's.
	ChallengeKey string `yaml:"challenge_key"`
	Gateway      struct {
		Address    string `yaml:"address"`
		ServerName string `yaml:"server_name"`
		KXCert     string `yaml:"kx_cert"`  // PEM: gateway key-exchange certificate, then PCA and brand
		TLSCA      string `yaml:"tls_ca"`   // PEM of the CA of the gateway's TLS certificate
		ClientCert string `yaml:"tls_cert"` // PEM: our client certificate
		ClientKey  string `yaml:"tls_key"`  // pkcs11: URI
	} `yaml:"gateway"`
	Console *consoleConfig `yaml:"console,omitempty"` // the operator's web console (consoleserve.go)
	// Shop is the storefront's HTTPS listener (shopserve.go); absent: none.
	Shop *shopConfig `yaml:"shop,omitempty"`
}

// running is an opened party: token, keys, trust, store.
type running struct {
	mod   *hsm.Module
	tok   *hsm.Token
	db    *store.Store
	trust *setproto.Trust
	sign  setproto.Party
	kx    *hsm.Key
	kxc   *x509.Certificate
	env   setproto.EnvelopeOptions
	crls  *pki.CRLRefresher
	// health follows the token and the store (startMetrics starts it)
	health *healthWatcher
}

func (r *running) close() {
	if r.db != nil {
		_ = r.db.Close()
	}
	if r.tok != nil {
		_ = r.tok.Close()
	}
	if r.mod != nil {
		_ = r.mod.Close()
	}
}

func (r *running) key(ctx context.Context, uri string) (*hsm.Key, error) {
	u, err := hsm.ParseURI(uri)
	if err != nil {
		return nil, err
	}
	return r.tok.KeyByURI(ctx, u)
}

// openParty opens what the configuration names; on any error it closes what it had
// opened and returns the error, which names the field at fault.
func openParty(ctx context.Context, env *cliEnv, c *partyConfig) (*running, error) {
	r := &running{}
	if err := r.open(ctx, env, c); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

func (r *running) open(ctx context.Context, env *cliEnv, c *partyConfig) error {
	var err error
	if r.mod, r.tok, err = c.openToken(ctx, env); err != nil {
		return err
	}
	sk, err := r.key(ctx, c.SignKey)
	if err != nil {
		return fmt.Errorf("sign_key: %w", err)
	}
	if r.kx, err = r.key(ctx, c.KXKey); err != nil {
		return fmt.Errorf("kx_key: %w", err)
	}
	sc, err := readPEMCerts(c.SignCert)
	if err != nil {
		return fmt.Errorf("sign_cert: %w", err)
	}
	r.sign = setproto.Party{Key: sk, Cert: sc[0], Chain: sc[1:]}
	kc, err := readPEMCerts(c.KXCert)
	if err != nil {
		return fmt.Errorf("kx_cert: %w", err)
	}
	r.kxc = kc[0]
	roots, err := readPEMCerts(c.Root)
	if err != nil {
		return fmt.Errorf("root: %w", err)
	}
	crls := pki.NewMemoryCRLs()
	v, err := pki.NewVerifier(roots[0], crls)
	if err != nil {
		return fmt.Errorf("root: %w", err)
	}
	var inter []*x509.Certificate
	for i, f := range c.CAChain {
		cs, err := readPEMCerts(f)
		if err != nil {
			return fmt.Errorf("ca_chain[%d]: %w", i, err)
		}
		inter = append(inter, cs...)
	}
	if r.crls, err = startCRLs(ctx, env, crls, c, append(append([]*x509.Certificate{roots[0]}, inter...), sc[1:]...)); err != nil {
		return err
	}
	r.trust = &setproto.Trust{Verifier: v, Intermediates: append(inter, sc[1:]...), Cache: pki.NewCertCache(4096)}
	// The service's own identity, before it serves anyone (selfcheck.go).
	if err := checkOwnIdentity(ctx, env.logger, c.role, v, inter, []ownCert{
		{field: "sign_cert", keyField: "sign_key", chain: sc, key: sk.Public(), purpose: pki.PurposeSignature},
		{field: "kx_cert", keyField: "kx_key", chain: kc, key: r.kx.Public(), purpose: pki.PurposeKeyExchange},
	}, time.Now()); err != nil {
		return err
	}
	if c.OAEPSHA256 {
		r.env.OAEPHash = crypto.SHA256
	}
	// Say whether this token could take OAEP-SHA-256 envelopes (SoftHSM 2.6.1 cannot).
	if err := r.kx.ProbeOAEP(ctx, crypto.SHA256, crypto.SHA256); err != nil {
		env.logger.Info("key-exchange key accepts RSA-OAEP with SHA-1 only", "key", r.kx.URI())
	}
	if r.db, err = store.Open(ctx, c.Store, store.MustExist()); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return nil
}

func loadCRLs(m *pki.MemoryCRLs, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			return nil
		}
		if blk.Type == "X509 CRL" {
			if err := m.PutDER(blk.Bytes); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
		}
	}
}

// tlsIdentity loads a TLS certificate chain and finds its key; certField and keyField
// name the configuration fields for errors.
func (r *running) tlsIdentity(ctx context.Context, certField, certFile, keyField, keyURI string) (tlsrpc.Identity, error) {
	chain, err := readPEMCerts(certFile)
	if err != nil {
		return tlsrpc.Identity{}, fmt.Errorf("%s: %w", certField, err)
	}
	k, err := r.key(ctx, keyURI)
	if err != nil {
		return tlsrpc.Identity{}, fmt.Errorf("%s: %w", keyField, err)
	}
	return tlsrpc.Identity{Cert: chain[0], Key: k, Chain: chain[1:]}, nil
}

func pool(path string) (*x509.CertPool, error) {
	cs, err := readPEMCerts(path)
	if err != nil {
		return nil, err
	}
	p := x509.NewCertPool()
	for _, c := range cs {
		p.AddCert(c)
	}
	return p, nil
}

func runGatewayServe(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay gateway serve", env)
	cfgPath := fs.String("config", "gateway.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var cfg gatewayConfig
	if err := loadConfig(*cfgPath, &cfg); err != nil {
		return err
	}
	cfg.role = pki.RoleGateway
	cards := cfg.Ledger
	if cfg.LedgerFile != "" {
		var more []gateway.Card
		if err := loadYAML(cfg.LedgerFile, &more); err != nil {
			return fmt.Errorf("ledger_file: %w", err)
		}
		cards = append(cards, more...)
	}
	r, err := openParty(ctx, env, &cfg.partyConfig)
	if err != nil {
		return err
	}
	defer r.close()
	u, err := hsm.ParseURI(cfg.PANHashKey)
	if err != nil {
		return fmt.Errorf("pan_hash_key: %w", err)
	}
	panKey, err := r.tok.SecretKeyByURI(ctx, u)
	if err != nil {
		return fmt.Errorf("pan_hash_key: %w", err)
	}
	// The issuer stand-in keys its in-memory ledger with a key that lives as long as
	// the process and is never written anywhere.
	ledgerKey := make([]byte, 32)
	if _, err := rand.Read(ledgerKey); err != nil {
		return err
	}
	ledger, err := gateway.NewLedger(ledgerKey, cards)
	if err != nil {
		return err
	}
	reg, err := startMetrics(ctx, env, &cfg.partyConfig, r)
	if err != nil {
		return err
	}
	g, err := gateway.New(gateway.Config{Sign: r.sign, KXCert: r.kxc, KXKey: r.kx, Trust: r.trust, Store: r.db,
		PANHashKey: store.NewPANHasher(panKey), Issuer: ledger, Envelope: r.env, Logger: env.logger,
		Decided: func(res setpb.AuthResult) { reg.Authorization(strings.ToLower(res.String())) }})
	if err != nil {
		return err
	}
	id, err := r.tlsIdentity(ctx, "tls.cert", cfg.TLS.Cert, "tls.key", cfg.TLS.Key)
	if err != nil {
		return err
	}
	cas, err := pool(cfg.TLS.ClientCA)
	if err != nil {
		return fmt.Errorf("tls.client_ca: %w", err)
	}
	// A merchant refused for its rate must keep the purchase retryable, so the refusal
	// reads as the gateway being unavailable, not as a decision.
	gs, health, err := tlsrpc.NewGRPCServerWithLimits(tlsrpc.ServerTLS(id, cas), cfg.Limits.serverLimits(
		&setpb.ErrorDetail{Reason: setpb.Reason_GATEWAY_UNAVAILABLE, Message: "rate limit exceeded, retry later"}),
		append(reg.GRPCServerOptions(), gateway.ServerOptions()...)...)
	if err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	g.Register(gs)
	reg.InitGRPCServer(gs)
	r.health.bind(health)
	return serveUntilDone(ctx, env, gs, health, cfg.Listen, "gateway "+g.ID())
}

func runMerchantServe(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay merchant serve", env)
	cfgPath := fs.String("config", "merchant.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var cfg merchantConfig
	if err := loadConfig(*cfgPath, &cfg); err != nil {
		return err
	}
	p, err := openMerchant(ctx, env, &cfg)
	if err != nil {
		return err
	}
	defer p.close()
	id, err := p.tlsIdentity(ctx, "tls.cert", cfg.TLS.Cert, "tls.key", cfg.TLS.Key)
	if err != nil {
		return err
	}
	// Wallets are anonymous at the TLS level: they authenticate by their SET signature.
	reg, err := startMetrics(ctx, env, &cfg.partyConfig, p.running)
	if err != nil {
		return err
	}
	gs, health, err := tlsrpc.NewGRPCServerWithLimits(&tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{id.TLSCertificate()}},
		cfg.Limits.serverLimits(nil), reg.GRPCServerOptions()...)
	if err != nil {
		return fmt.Errorf("limits: %w", err)
	}
	p.m.Register(gs)
	reg.InitGRPCServer(gs)
	stopShop, err := startShop(ctx, env, &cfg, p)
	if err != nil {
		return err
	}
	defer stopShop()
	if err := startConsole(ctx, env, &cfg, p); err != nil {
		return err
	}
	p.health.bind(health)
	return serveUntilDone(ctx, env, gs, health, cfg.Listen, "merchant "+p.m.ID())
}

// merchantParty is an opened merchant: its party (token, keys, trust, store), its
// challenge key, its connection to the gateway and the merchant on them. `merchant
// serve` and the merchant's operator commands open it the same way.
type merchantParty struct {
	*running
	conn *grpc.ClientConn
	m    *merchant.Merchant
}

func (p *merchantParty) close() {
	if p.conn != nil {
		_ = p.conn.Close()
	}
	p.running.close()
}

// openMerchant opens what a merchant configuration names; on any error it closes
// what it had opened and returns the error, which names the field at fault.
func openMerchant(ctx context.Context, env *cliEnv, cfg *merchantConfig) (*merchantParty, error) {
	cfg.role = pki.RoleMerchant
	r, err := openParty(ctx, env, &cfg.partyConfig)
	if err != nil {
		return nil, err
	}
	p := &merchantParty{running: r}
	if err := p.open(ctx, env, cfg); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

func (p *merchantParty) open(ctx context.Context, env *cliEnv, cfg *merchantConfig) error {
	u, err := hsm.ParseURI(cfg.ChallengeKey)
	if err != nil {
		return fmt.Errorf("challenge_key: %w", err)
	}
	challengeKey, err := p.tok.SecretKeyByURI(ctx, u)
	if err != nil {
		return fmt.Errorf("challenge_key: %w", err)
	}
	gw := cfg.Gateway
	client, err := p.tlsIdentity(ctx, "gateway.tls_cert", gw.ClientCert, "gateway.tls_key", gw.ClientKey)
	if err != nil {
		return err
	}
	gwPool, err := pool(gw.TLSCA)
	if err != nil {
		return fmt.Errorf("gateway.tls_ca: %w", err)
	}
	if p.conn, err = grpc.NewClient(gw.Address, grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(&client, gwPool, gw.ServerName)))); err != nil {
		return fmt.Errorf("gateway.address: %w", err)
	}
	gkx, err := readPEMCerts(gw.KXCert)
	if err != nil {
		return fmt.Errorf("gateway.kx_cert: %w", err)
	}
	p.m, err = merchant.New(ctx, merchant.Config{Sign: p.sign, KXCert: p.kxc, KXKey: p.kx, Trust: p.trust, Store: p.db,
		Brand: cfg.Brand, GatewayKX: gkx[0], GatewayChain: gkx[1:], Gateway: setpb.NewGatewayClient(p.conn),
		Offers: cfg.Offers, OfferBook: cfg.Shop.offerBook(p.db), ChallengeKey: challengeKey, Envelope: p.env, Logger: env.logger})
	return err
}

func runWalletBuy(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay wallet buy", env)
	tf := tokenFlagsOn(fs)
	dir := fs.String("wallet", "./var/wallet", "wallet directory made by 'setpay wallet register'")
	passFile := fs.String("passphrase-file", "", "file holding the wallet passphrase (default: $SETPAY_WALLET_PASSPHRASE)")
	addr := fs.String("merchant", "", "merchant address host:port")
	merchantCA := fs.String("merchant-ca", "", "PEM of the CA of the merchant's TLS certificate")
	serverName := fs.String("server-name", "", "name in the merchant's TLS certificate (default: the host of --merchant)")
	brand := fs.String("brand", "SETPay", "card brand")
	offer := fs.String("offer", "", "offer id agreed with the merchant")
	var crlFiles listFlag
	fs.Var(&crlFiles, "crls", "PEM file(s) of current CRLs of root, brand, MCA and PCA (revocation is always checked)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *offer == "" || *addr == "" || *merchantCA == "" {
		return usageErrorf("--offer, --merchant and --merchant-ca are required")
	}
	if *serverName == "" {
		host, _, err := net.SplitHostPort(*addr)
		if err != nil {
			return usageErrorf("--merchant: %w", err)
		}
		*serverName = host
	}
	pass, err := readSecret(*passFile, "SETPAY_WALLET_PASSPHRASE", "wallet passphrase")
	if err != nil {
		return err
	}
	var find wallet.KeyFinder
	if tf.selected() || tf.softhsmDir != "" {
		mod, tok, err := tf.open(ctx, env)
		if err != nil {
			return err
		}
		defer mod.Close()
		defer tok.Close()
		find = func(ctx context.Context, label string) (crypto.Signer, error) { return tok.FindKey(ctx, label) }
	}
	// The trust anchor is the root the sealed card file is bound to (Load refuses a
	// root.pem that is not it), never whatever root.pem the directory holds.
	id, err := wallet.Load(ctx, *dir, pass, wallet.LoadOptions{Find: find, Logger: env.logger})
	if err != nil {
		return err
	}
	crls := pki.NewMemoryCRLs()
	for _, f := range crlFiles {
		if err := loadCRLs(crls, f); err != nil {
			return err
		}
	}
	v, err := pki.NewVerifier(id.Root, crls)
	if err != nil {
		return err
	}
	p, err := pool(*merchantCA)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsrpc.ClientTLS(nil, p, *serverName))))
	if err != nil {
		return err
	}
	defer conn.Close()
	// The merchant sends the MCA and PCA certificates with its offer; the wallet
	// announces the ones it already has (its own chain).
	w, err := wallet.New(wallet.Config{Identity: *id, Trust: &setproto.Trust{Verifier: v, Intermediates: id.Chain, Cache: pki.NewCertCache(64)},
		Merchant: setpb.NewMerchantClient(conn), Brand: *brand, Logger: env.logger})
	if err != nil {
		return err
	}
	r, err := w.Buy(ctx, *offer)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stdout, "purchase %s at %s with %s: %s %s %s %s captured=%v\n", r.XID, r.Merchant,
		pki.MaskPAN(id.Card.PAN), r.Result, r.AuthCode, money(r.Amount), r.Currency, r.Captured)
	return nil
}
