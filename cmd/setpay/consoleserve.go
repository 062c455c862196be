package main

// The merchant console's listener: `merchant serve` with a console: block in its
// configuration serves the operator's web console (merchant/console) over HTTPS on
// its own address, with a TLS key in the merchant's token:
//
//	console:
//	  listen: 127.0.0.1:8444
//	  tls: {cert: console-tls.pem, key: "pkcs11:token=setpay-merchant;object=console-tls"}
//	  users_file: console-users        # name:bcrypt-hash lines; setpay merchant console-user
//	  client_ca: operators-ca.pem      # optional: require client certificates from this CA
//
// With users_file the console asks for a login; with client_ca the TLS handshake
// requires a client certificate from that CA; with both, both.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/setpay/setpay/merchant/console"
)

// consoleConfig is merchant.yaml's console: block (absent: no console).
type consoleConfig struct {
	Listen string `yaml:"listen"`
	TLS    struct {
		Cert string `yaml:"cert"` // PEM chain, leaf first
		Key  string `yaml:"key"`  // pkcs11: URI of the TLS key in the merchant's token
	} `yaml:"tls"`
	UsersFile string `yaml:"users_file,omitempty"` // name:bcrypt-hash lines, mode 0600
	ClientCA  string `yaml:"client_ca,omitempty"`  // PEM: require client certificates from this CA
}

func (c *consoleConfig) check(cs *checks) {
	if c == nil {
		return
	}
	cs.hostPort("console.listen", c.Listen)
	cs.required("console.tls.cert", c.TLS.Cert)
	cs.keyURI("console.tls.key", c.TLS.Key)
	if c.UsersFile == "" && c.ClientCA == "" {
		cs.fail("console.users_file", "required unless console.client_ca is set: the console needs a credential "+
			"(a users file made with setpay merchant console-user, client certificates, or both)", nil)
	}
}

func (c *consoleConfig) resolvePaths(dir string) {
	if c == nil {
		return
	}
	c.TLS.Cert, c.UsersFile, c.ClientCA = inDir(dir, c.TLS.Cert), inDir(dir, c.UsersFile), inDir(dir, c.ClientCA)
}

// startConsole starts the console when the configuration has a console: block and
// prints `console on https://ADDR/`; it stops when ctx ends. Errors name the field.
func startConsole(ctx context.Context, env *cliEnv, cfg *merchantConfig, p *merchantParty) error {
	cc := cfg.Console
	if cc == nil {
		return nil
	}
	id, err := p.tlsIdentity(ctx, "console.tls.cert", cc.TLS.Cert, "console.tls.key", cc.TLS.Key)
	if err != nil {
		return err
	}
	ccfg := console.Config{Operator: p.m, Logger: env.logger}
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{id.TLSCertificate()}}
	if cc.UsersFile != "" {
		path := cc.UsersFile
		if _, err := console.LoadUsers(path); err != nil {
			return fmt.Errorf("console.users_file: %w", err)
		}
		// Read again on every login: a user added while serving needs no restart.
		ccfg.Users = func() (console.Users, error) { return console.LoadUsers(path) }
	}
	if cc.ClientCA != "" {
		cas, err := pool(cc.ClientCA)
		if err != nil {
			return fmt.Errorf("console.client_ca: %w", err)
		}
		tcfg.ClientAuth, tcfg.ClientCAs = tls.RequireAndVerifyClientCert, cas
		ccfg.ClientCert = true
	}
	h, err := console.New(ccfg)
	if err != nil {
		return err
	}
	lis, err := net.Listen("tcp", cc.Listen)
	if err != nil {
		return fmt.Errorf("console.listen: %w", err)
	}
	srv := &http.Server{Handler: h, TLSConfig: tcfg, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(env.logger.Handler(), slog.LevelDebug)}
	fmt.Fprintf(env.stdout, "console on https://%s/\n", lis.Addr())
	go func() {
		if err := srv.ServeTLS(lis, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			env.logger.Error("console stopped", "err", err)
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	return nil
}
