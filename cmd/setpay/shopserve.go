package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/merchant/shop"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/store"
)

// shopConfig is the merchant configuration's `shop:` block: the storefront's HTTPS
// listener (off when the block is absent).
type shopConfig struct {
	Listen string `yaml:"listen"` // host:port of the storefront
	TLS    struct {
		Cert string `yaml:"cert"` // PEM chain, leaf first
		Key  string `yaml:"key"`  // pkcs11: URI of the TLS key in the merchant's token
	} `yaml:"tls"`
	// WalletURL is where the cardholder's wallet UI listens (default
	// http://127.0.0.1:7447): the checkout page links to WalletURL/receive.
	WalletURL string `yaml:"wallet_url"`
	// SETAddress and SETServerName are what the initiation tells wallets: the
	// merchant's SET gRPC address and the name in its TLS certificate. Defaults: the
	// merchant's listen (it must then name a host) and that host.
	SETAddress    string `yaml:"set_address"`
	SETServerName string `yaml:"set_server_name"`
	// MaxQuantity bounds each cart line (default 10); InitiationValidity is how long
	// a checkout's payment initiation is valid (default 30m, at most 24h).
	MaxQuantity        int    `yaml:"max_quantity"`
	InitiationValidity string `yaml:"initiation_validity"`
}

// check validates the shop block of m (nothing when absent).
func (s *shopConfig) check(c *checks, m *merchantConfig) {
	if s == nil {
		return
	}
	c.hostPort("shop.listen", s.Listen)
	c.required("shop.tls.cert", s.TLS.Cert)
	c.keyURI("shop.tls.key", s.TLS.Key)
	if s.WalletURL != "" {
		u, err := url.Parse(s.WalletURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			c.fail("shop.wallet_url", fmt.Sprintf("want an http(s)://host:port URL of the wallet UI, got %q", s.WalletURL), nil)
		}
	}
	if s.SETAddress != "" {
		c.hostPort("shop.set_address", s.SETAddress)
	} else if host, _, err := net.SplitHostPort(m.Listen); err == nil && unspecifiedHost(host) {
		c.fail("shop.set_address", fmt.Sprintf("required: listen %q names no host wallets can reach", m.Listen), nil)
	}
	if s.MaxQuantity < 0 || s.MaxQuantity > 1000 {
		c.fail("shop.max_quantity", fmt.Sprintf("want 1..1000 (0: 10), got %d", s.MaxQuantity), nil)
	}
	if s.InitiationValidity != "" {
		if d, err := time.ParseDuration(s.InitiationValidity); err != nil || d <= 0 || d > setproto.MaxInitiationLifetime {
			c.fail("shop.initiation_validity", fmt.Sprintf("want a duration from 1s to 24h such as 30m, got %q", s.InitiationValidity), nil)
		}
	}
	if len(m.Offers) == 0 {
		c.fail("offers", "the storefront (shop) needs at least one offer to sell", nil)
	}
}

func unspecifiedHost(h string) bool {
	if h == "" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsUnspecified()
}

func (s *shopConfig) resolvePaths(dir string) {
	if s != nil {
		s.TLS.Cert = inDir(dir, s.TLS.Cert)
	}
}

// offerBook is the merchant's offer book for the storefront's checkouts (nil
// without a storefront: the merchant then sells its configured offers only).
func (s *shopConfig) offerBook(db store.DB) merchant.OfferBook {
	if s == nil {
		return nil
	}
	return shop.NewBook(db)
}

// startShop serves the storefront on its own HTTPS listener, with the TLS key in
// the merchant's token; it prints "storefront on https://ADDR/". stop ends it,
// waiting (up to 5s) for requests in flight, before the merchant closes its store
// and token. Nothing when the configuration has no shop block.
func startShop(ctx context.Context, env *cliEnv, cfg *merchantConfig, p *merchantParty) (stop func(), err error) {
	stop = func() {}
	sc := cfg.Shop
	if sc == nil {
		return stop, nil
	}
	id, err := p.tlsIdentity(ctx, "shop.tls.cert", sc.TLS.Cert, "shop.tls.key", sc.TLS.Key)
	if err != nil {
		return stop, err
	}
	u, err := hsm.ParseURI(cfg.ChallengeKey)
	if err != nil {
		return stop, fmt.Errorf("challenge_key: %w", err)
	}
	macKey, err := p.tok.SecretKeyByURI(ctx, u)
	if err != nil {
		return stop, fmt.Errorf("challenge_key: %w", err)
	}
	endpoint := sc.SETAddress
	if endpoint == "" {
		endpoint = cfg.Listen
	}
	serverName := sc.SETServerName
	if serverName == "" {
		serverName, _, _ = net.SplitHostPort(endpoint)
	}
	var validity time.Duration
	if sc.InitiationValidity != "" {
		validity, _ = time.ParseDuration(sc.InitiationValidity) // validated
	}
	s, err := shop.New(shop.Config{Sign: p.sign, MACKey: macKey, Store: p.db, MerchantID: p.m.ID(), Brands: []string{cfg.Brand},
		Offers: cfg.Offers, Endpoint: endpoint, ServerName: serverName, WalletURL: sc.WalletURL, MaxQuantity: sc.MaxQuantity,
		InitiationValidity: validity, Logger: env.logger})
	if err != nil {
		return stop, fmt.Errorf("shop: %w", err)
	}
	lis, err := net.Listen("tcp", sc.Listen)
	if err != nil {
		return stop, fmt.Errorf("shop.listen: %w", err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{id.TLSCertificate()}},
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		MaxHeaderBytes: 16 << 10, ErrorLog: slog.NewLogLogger(env.logger.Handler(), slog.LevelWarn),
	}
	fmt.Fprintf(env.stdout, "storefront on https://%s/\n", lis.Addr())
	go func() {
		if err := srv.ServeTLS(lis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			env.logger.Error("storefront stopped", "err", err)
		}
	}()
	return func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}, nil
}
