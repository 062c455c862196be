package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"

	"go.yaml.in/yaml/v3"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/metrics"
	"github.com/setpay/setpay/signer"
)

// signerConfig is the signer service's YAML configuration. A real HSM differs only in
// module, token and pin_source.
type signerConfig struct {
	// module or softhsm_dir; token, token_serial or token_slot; pin_source; max_sessions
	tokenConfig `yaml:",inline"`

	Listen string `yaml:"listen"`
	TLS    struct {
		Cert     string `yaml:"cert"`      // PEM chain, leaf first
		Key      string `yaml:"key"`       // pkcs11: URI of the TLS key in the token
		ClientCA string `yaml:"client_ca"` // PEM of the CA that issues client certificates
	} `yaml:"tls"`
	Keys []struct {
		Name string `yaml:"name"` // role name clients use
		Key  string `yaml:"key"`  // pkcs11: URI in the token
		Cert string `yaml:"cert"` // optional PEM certificate
	} `yaml:"keys"`
	Grants       map[string][]string `yaml:"grants"`
	MaxMsgBytes  int                 `yaml:"max_message_bytes"`
	MaxBatchSize int                 `yaml:"max_batch"`
	// MetricsListen serves Prometheus /metrics on its own port ("" for none).
	MetricsListen string `yaml:"metrics_listen"`
}

func loadYAML(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	if len(b) > 1<<20 {
		return fmt.Errorf("config %s larger than 1 MiB", path)
	}
	dec := yaml.NewDecoder(bytesReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// configFile is a configuration that resolves its paths against the file's directory
// and checks itself, naming each missing or wrong field.
type configFile interface {
	resolvePaths(dir string)
	validate() error
}

// loadConfig reads a YAML configuration (unknown fields are errors), resolves its
// relative paths against the file's directory and validates it.
func loadConfig(path string, v configFile) error {
	if err := loadYAML(path, v); err != nil {
		return err
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	v.resolvePaths(filepath.Dir(abs))
	if err := v.validate(); err != nil {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

func readPEMCerts(path string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no certificate", path)
	}
	return out, nil
}

func runSignerServe(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay signer serve", env)
	cfgPath := fs.String("config", "signer.yaml", "configuration file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var cfg signerConfig
	if err := loadConfig(*cfgPath, &cfg); err != nil {
		return err
	}
	mod, tok, err := cfg.openToken(ctx, env)
	if err != nil {
		return err
	}
	defer mod.Close()
	defer tok.Close()
	reg := metrics.New()
	reg.WatchToken(tok)
	hw := newHealthWatcher(env.logger, nil, tok)
	reg.SetReadiness(hw.ready)
	go hw.run(ctx)
	if err := registerBuildInfo(reg.Prometheus()); err != nil {
		return err
	}
	if cfg.MetricsListen != "" {
		addr, err := reg.Serve(ctx, cfg.MetricsListen, env.logger)
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "metrics on http://%s/metrics\n", addr)
	}
	keyByURI := func(s string) (*hsm.Key, error) {
		u, err := hsm.ParseURI(s)
		if err != nil {
			return nil, err
		}
		return tok.KeyByURI(ctx, u)
	}
	svc := signer.NewService()
	for i, k := range cfg.Keys {
		key, err := keyByURI(k.Key)
		if err != nil {
			return fmt.Errorf("keys[%d].key (%s): %w", i, k.Name, err)
		}
		e := signer.Entry{Name: k.Name, Key: key, Algorithm: string(key.Algorithm()), Usage: string(key.Usage())}
		if k.Cert != "" {
			certs, err := readPEMCerts(k.Cert)
			if err != nil {
				return fmt.Errorf("keys[%d].cert: %w", i, err)
			}
			e.Certificate = certs[0]
		}
		if err := svc.Add(e); err != nil {
			return err
		}
	}
	tlsKey, err := keyByURI(cfg.TLS.Key)
	if err != nil {
		return fmt.Errorf("tls.key: %w", err)
	}
	chain, err := readPEMCerts(cfg.TLS.Cert)
	if err != nil {
		return fmt.Errorf("tls.cert: %w", err)
	}
	cas, err := readPEMCerts(cfg.TLS.ClientCA)
	if err != nil {
		return fmt.Errorf("tls.client_ca: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	id := tlsrpc.Identity{Cert: chain[0], Key: tlsKey, Chain: chain[1:]}
	gs, health := tlsrpc.NewGRPCServer(tlsrpc.ServerTLS(id, pool), cfg.MaxMsgBytes, reg.GRPCServerOptions()...)
	signer.NewServer(svc, signer.Grants(cfg.Grants), signer.Limits{MaxBatch: cfg.MaxBatchSize}, env.logger).Register(gs)
	reg.InitGRPCServer(gs)
	hw.bind(health)
	env.logger.Info("signer serving", "listen", cfg.Listen, "token", tok.Label(), "keys", svc.Names())
	return serveUntilDone(ctx, env, gs, health, cfg.Listen, fmt.Sprintf("signer with %d keys", len(svc.Names())))
}
