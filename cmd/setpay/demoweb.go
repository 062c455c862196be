package main

// `setpay demo --web`: after the transcript, the demo's system keeps running and
// serves its web faces on loopback until interrupted: the merchant's storefront and
// console (HTTPS with the merchant's TLS key in its token) and Alice's wallet UI.

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/secretfile"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/merchant/console"
	"github.com/setpay/setpay/merchant/shop"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/wallet/webui"
)

// demoWebListens are the loopback addresses of the demo's web faces.
type demoWebListens struct{ shop, console, wallet string }

// demoConsoleUser is the console's operator in the demo; its password is random per
// run, in <var>/console-password.
const demoConsoleUser = "operator"

// serveDemoWeb serves the storefront, the console and Alice's wallet UI (the wallet
// directory exportServeConfigs wrote) on b until ctx ends, printing their URLs.
func serveDemoWeb(ctx context.Context, env *cliEnv, root string, b *system.Bed, walletTok *hsm.Token, offers []merchant.Offer, at demoWebListens) error {
	w := env.stdout
	pkiDir := filepath.Join(root, "pki")
	// The wallet UI first: the storefront links to its address.
	wl, err := webui.Listen(at.wallet)
	if err != nil {
		return usageErrorf("--wallet-listen: %w", err)
	}
	defer wl.Close()
	pool := x509.NewCertPool()
	pool.AddCert(b.TLS.Certificate())
	merchants := &uiMerchants{pool: pool, conns: map[string]*grpc.ClientConn{}}
	defer merchants.close()
	ui, err := webui.New(webui.Config{Dir: filepath.Join(root, "wallet-alice"), Brand: system.Brand, Merchants: merchants.dial,
		CRLs:    []pki.CRLFetcher{pki.CRLFiles{filepath.Join(pkiDir, "crls.pem")}},
		FindKey: func(ctx context.Context, label string) (crypto.Signer, error) { return walletTok.FindKey(ctx, label) },
		Logger:  env.logger})
	if err != nil {
		return err
	}

	host, _, err := net.SplitHostPort(b.MerchantAddr)
	if err != nil {
		return err
	}
	sh, err := shop.New(shop.Config{Sign: b.MerchantEnt.Sign, MACKey: b.ChallengeKey, Store: b.MerchantDB, MerchantID: b.MerchantEnt.ID,
		Brands: []string{system.Brand}, Offers: offers, Endpoint: b.MerchantAddr, ServerName: host,
		WalletURL: "http://" + wl.Addr().String(), Logger: env.logger})
	if err != nil {
		return fmt.Errorf("shop: %w", err)
	}

	password, err := setproto.NewID() // 128 random bits
	if err != nil {
		return err
	}
	users, passFile := filepath.Join(root, "console-users"), filepath.Join(root, "console-password")
	if err := secretfile.Write(passFile, []byte(password+"\n")); err != nil {
		return err
	}
	if _, err := console.SetUser(users, demoConsoleUser, []byte(password)); err != nil {
		return err
	}
	co, err := console.New(console.Config{Operator: b.Merchant, Users: func() (console.Users, error) { return console.LoadUsers(users) }, Logger: env.logger})
	if err != nil {
		return err
	}

	cert := b.MerchantTLS.TLSCertificate()
	var servers []*http.Server
	serve := func(what, addr string, h http.Handler) (string, error) {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return "", fmt.Errorf("--%s-listen: %w", what, err)
		}
		srv := &http.Server{Handler: h, TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
			ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 2 * time.Minute,
			ErrorLog: slog.NewLogLogger(env.logger.Handler(), slog.LevelDebug)}
		servers = append(servers, srv)
		go func() {
			if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				env.logger.Error(what+" stopped", "err", err)
			}
		}()
		return l.Addr().String(), nil
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(sctx)
		}
	}()
	shopAddr, err := serve("shop", at.shop, sh.Handler())
	if err != nil {
		return err
	}
	consoleAddr, err := serve("console", at.console, co)
	if err != nil {
		return err
	}
	uiDone := make(chan error, 1)
	go func() { uiDone <- ui.Serve(ctx, wl) }()

	sum := sha256.Sum256(b.MerchantTLS.Cert.RawSubjectPublicKeyInfo)
	fmt.Fprintf(w, "\nThe web faces, on this system, until Ctrl-C:\n")
	fmt.Fprintf(w, "storefront on https://%s/\n", shopAddr)
	fmt.Fprintf(w, "console on https://%s/\n", consoleAddr)
	fmt.Fprintf(w, "  log in as %s, password in %s\n", demoConsoleUser, passFile)
	fmt.Fprintf(w, "wallet UI on %s\n", ui.URL(wl.Addr().String()))
	fmt.Fprintf(w, "  Alice's wallet; its passphrase is in %s\n", filepath.Join(root, "wallet-alice.pass"))
	fmt.Fprintf(w, "The storefront and console serve the merchant's TLS certificate (key in token setpay-merchant), issued by\n")
	fmt.Fprintf(w, "the demo's TLS CA %s: trust that CA in the browser, or pin exactly that key, e.g.\n", filepath.Join(pkiDir, "tls-ca.pem"))
	fmt.Fprintf(w, "  chromium --user-data-dir=$(mktemp -d) --ignore-certificate-errors-spki-list=%s https://%s/\n",
		base64.StdEncoding.EncodeToString(sum[:]), shopAddr)
	select {
	case <-ctx.Done():
		return nil
	case err := <-uiDone:
		return err
	}
}
