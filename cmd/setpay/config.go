package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/pki"
	"github.com/setpay/setpay/softhsm"
)

// fieldError says what is wrong with one configuration field. It never holds the
// field's value: a misplaced PIN or key must not reach a terminal or a log.
type fieldError struct {
	Field   string // YAML path, e.g. "tls.key" or "keys[2].name"
	Problem string
	Err     error // the underlying error, if any
}

func (e *fieldError) Error() string {
	if e.Err != nil {
		return e.Field + ": " + e.Problem + ": " + e.Err.Error()
	}
	return e.Field + ": " + e.Problem
}

func (e *fieldError) Unwrap() error { return e.Err }

// checks collects a configuration's field errors; err joins them (errors.Join) so an
// operator sees every missing or wrong field at once.
type checks []error

func (c *checks) fail(field, problem string, err error) {
	*c = append(*c, &fieldError{Field: field, Problem: problem, Err: err})
}

func (c checks) err() error { return errors.Join(c...) }

// required reports a missing value and says whether v is present.
func (c *checks) required(field, v string) bool {
	if strings.TrimSpace(v) == "" {
		c.fail(field, "required", nil)
		return false
	}
	return true
}

// optionalDuration checks a Go duration ("5m", "30s") when one is given.
func (c *checks) optionalDuration(field, v string) {
	if v == "" {
		return
	}
	if d, err := time.ParseDuration(v); err != nil || d <= 0 {
		c.fail(field, fmt.Sprintf("want a positive duration such as 5m, got %q", v), nil)
	}
}

// hostPort checks an address to listen on or dial.
func (c *checks) hostPort(field, v string) {
	if !c.required(field, v) {
		return
	}
	if _, _, err := net.SplitHostPort(v); err != nil {
		c.fail(field, "want host:port", err)
	}
}

// optionalHostPort checks an address that may be left out.
func (c *checks) optionalHostPort(field, v string) {
	if v != "" {
		c.hostPort(field, v)
	}
}

// keyURI checks a pkcs11: URI of a key in the token.
func (c *checks) keyURI(field, v string) {
	if !c.required(field, v) {
		return
	}
	if _, err := hsm.ParseURI(v); err != nil {
		c.fail(field, "want a pkcs11: URI", err)
	}
}

// secretSource checks where a PIN or key comes from: env:NAME or file:PATH and nothing
// else, so that a PIN pasted in place of its source is refused and not shown.
func (c *checks) secretSource(field, v string) {
	if !c.required(field, v) {
		return
	}
	if err := checkSecretSource(v); err != nil {
		c.fail(field, err.Error(), nil)
	}
}

// errSecretSource is a secret source that names neither an environment variable nor a
// file. Its text never includes the value.
var errSecretSource = errors.New("want env:NAME or file:PATH (the value given is not shown: it may be a secret)")

func checkSecretSource(v string) error {
	v = strings.TrimSpace(v)
	switch {
	case strings.HasPrefix(v, "env:") && len(v) > len("env:"):
		return nil
	case strings.HasPrefix(v, "file:") && len(v) > len("file:"):
		return nil
	}
	return errSecretSource
}

// storeDSN checks a store DSN's form (whether the store exists is for store.Open).
func (c *checks) storeDSN(field, v string) {
	if !c.required(field, v) {
		return
	}
	if !strings.HasPrefix(v, "sqlite:") && !strings.HasPrefix(v, "postgres://") && !strings.HasPrefix(v, "postgresql://") {
		c.fail(field, "want sqlite:PATH or postgres://...", nil)
	}
}

func (c *checks) nonNegative(field string, v float64) {
	if v < 0 {
		c.fail(field, fmt.Sprintf("must not be negative (got %v)", v), nil)
	}
}

// tokenConfig is how every service configuration (gateway, merchant, signer and the
// CA's ca.yaml) names its module, its token and the token's PIN:
//
//	module: /usr/lib/vendor/libpkcs11.so   # or softhsm_dir: for a SoftHSM dev directory
//	token: gw                              # or token_serial: / token_slot:, exactly one
//	pin_source: env:GATEWAY_PIN
//	max_sessions: 8
//
// softhsm_dir is a directory made by `setpay hsm init-softhsm`: it points SoftHSM at
// the directory (SOFTHSM2_CONF, before the module loads) and defaults module to
// SoftHSM2 and pin_source to the directory's PIN file, like --softhsm-dir.
type tokenConfig struct {
	Module      string `yaml:"module,omitempty"`
	SoftHSMDir  string `yaml:"softhsm_dir,omitempty"`
	Token       string `yaml:"token,omitempty"` // label
	TokenSerial string `yaml:"token_serial,omitempty"`
	TokenSlot   *int   `yaml:"token_slot,omitempty"`
	PINSource   string `yaml:"pin_source,omitempty"`
	MaxSessions int    `yaml:"max_sessions,omitempty"` // 0: the token's own limit
}

// check checks the token keys; needModule: module (or softhsm_dir) must be given here,
// not by a flag.
func (t *tokenConfig) check(c *checks, needModule bool) {
	if t.SoftHSMDir != "" {
		if _, err := os.Stat(softhsm.Dir{Root: t.SoftHSMDir}.ConfPath()); err != nil {
			c.fail("softhsm_dir", "not a SoftHSM2 dev token directory (make one with setpay hsm init-softhsm)", err)
		}
	} else if needModule {
		c.required("module", t.Module)
	}
	var set []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"token", t.Token != ""}, {"token_serial", t.TokenSerial != ""}, {"token_slot", t.TokenSlot != nil}} {
		if f.set {
			set = append(set, f.name)
		}
	}
	switch {
	case len(set) == 0:
		c.fail("token", "required: name the token by its label (token), token_serial or token_slot", nil)
	case len(set) > 1:
		for _, f := range set[1:] {
			c.fail(f, fmt.Sprintf("select the token by exactly one of token, token_serial and token_slot (%s is set too)", set[0]), nil)
		}
	}
	if t.TokenSlot != nil {
		c.nonNegative("token_slot", float64(*t.TokenSlot))
	}
	if t.PINSource != "" || (needModule && t.SoftHSMDir == "") {
		c.secretSource("pin_source", t.PINSource)
	}
	c.nonNegative("max_sessions", float64(t.MaxSessions))
}

func (t *tokenConfig) resolvePaths(dir string) {
	t.Module, t.PINSource, t.SoftHSMDir = moduleInDir(dir, t.Module), sourceInDir(dir, t.PINSource), inDir(dir, t.SoftHSMDir)
}

// flags are the token flags these keys stand for.
func (t *tokenConfig) flags() *tokenFlags {
	f := &tokenFlags{}
	f.defaultFrom(*t)
	return f
}

// openToken opens the module and the token the keys name (pointing SoftHSM at
// softhsm_dir first), with the same errors as the token flags.
func (t *tokenConfig) openToken(ctx context.Context, env *cliEnv) (*hsm.Module, *hsm.Token, error) {
	return t.flags().open(ctx, env)
}

// validate checks what the gateway and the merchant share.
func (p *partyConfig) validate() error {
	var c checks
	p.check(&c)
	return c.err()
}

func (p *partyConfig) check(c *checks) {
	p.tokenConfig.check(c, true)
	c.hostPort("listen", p.Listen)
	c.keyURI("sign_key", p.SignKey)
	c.required("sign_cert", p.SignCert)
	c.keyURI("kx_key", p.KXKey)
	c.required("kx_cert", p.KXCert)
	c.required("root", p.Root)
	for i, f := range p.CAChain {
		c.required(fmt.Sprintf("ca_chain[%d]", i), f)
	}
	if len(p.CRLs) == 0 && p.CRLCA.Address == "" {
		c.fail("crls", "required unless crl_ca is set: at least one PEM file of the CAs' CRLs (revocation is always checked)", nil)
	}
	p.CRLCA.check(c)
	for i, f := range p.CRLs {
		c.required(fmt.Sprintf("crls[%d]", i), f)
	}
	c.optionalDuration("crl_refresh", p.CRLRefresh)
	c.storeDSN("store", p.Store)
	c.required("tls.cert", p.TLS.Cert)
	c.keyURI("tls.key", p.TLS.Key)
	c.optionalHostPort("metrics_listen", p.MetricsListen)
	p.Limits.check(c)
}

func (l limitsConfig) check(c *checks) {
	c.nonNegative("limits.max_message_bytes", float64(l.MaxMessageBytes))
	c.nonNegative("limits.rate_per_second", l.RatePerSecond)
	c.nonNegative("limits.rate_burst", float64(l.RateBurst))
	c.nonNegative("limits.rate_max_clients", float64(l.RateMaxClients))
}

func (g *gatewayConfig) validate() error {
	var c checks
	g.check(&c)
	c.required("tls.client_ca", g.TLS.ClientCA)
	c.keyURI("pan_hash_key", g.PANHashKey)
	if g.LegacyPANHashKeySource != "" {
		c.fail("pan_hash_key_source", "a software key file is no longer accepted: make a MAC key in the gateway's token "+
			"(setpay hsm keygen --alg hmac-sha256 --usage mac --label pan-hash), set pan_hash_key to its pkcs11: URI, "+
			"then destroy the old key file and its backups (docs/protocol.md, \"Stored PAN data\")", nil)
	}
	return c.err()
}

func (m *merchantConfig) validate() error {
	var c checks
	m.check(&c)
	c.keyURI("challenge_key", m.ChallengeKey)
	c.hostPort("gateway.address", m.Gateway.Address)
	c.required("gateway.kx_cert", m.Gateway.KXCert)
	c.required("gateway.tls_ca", m.Gateway.TLSCA)
	c.required("gateway.tls_cert", m.Gateway.ClientCert)
	c.keyURI("gateway.tls_key", m.Gateway.ClientKey)
	m.Console.check(&c)
	m.Shop.check(&c, m)
	return c.err()
}

func (s *signerConfig) validate() error {
	var c checks
	s.tokenConfig.check(&c, true)
	c.hostPort("listen", s.Listen)
	c.required("tls.cert", s.TLS.Cert)
	c.keyURI("tls.key", s.TLS.Key)
	c.required("tls.client_ca", s.TLS.ClientCA)
	for i, k := range s.Keys {
		c.required(fmt.Sprintf("keys[%d].name", i), k.Name)
		c.keyURI(fmt.Sprintf("keys[%d].key", i), k.Key)
	}
	c.optionalHostPort("metrics_listen", s.MetricsListen)
	c.nonNegative("max_message_bytes", float64(s.MaxMsgBytes))
	c.nonNegative("max_batch", float64(s.MaxBatchSize))
	return c.err()
}

func (f *caFileConfig) validate() error {
	var c checks
	c.storeDSN("store", f.Store)
	f.tokenConfig.check(&c, false)
	c.required("root_token", f.RootToken)
	for name, v := range f.CRLValidity {
		field := "crl_validity." + name
		if r, err := pki.ParseRole(name); err != nil || !r.IsCA() {
			c.fail(field, "unknown CA: want root, brand, cca, mca or pca", nil)
			continue
		}
		if d, err := time.ParseDuration(v); err != nil || d <= 0 {
			c.fail(field, fmt.Sprintf("want a positive duration such as 168h, got %q", v), nil)
		}
	}
	return c.err()
}

// Paths in a configuration file are relative to the file's directory, never to the
// directory a command happens to run in: a CA command run from elsewhere must open the
// CA's store, not start a second one.

// inDir resolves a relative path p against dir.
func inDir(dir, p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// dsnInDir resolves the path of a sqlite: DSN against dir; other DSNs are unchanged.
func dsnInDir(dir, dsn string) string {
	path, ok := strings.CutPrefix(dsn, "sqlite:")
	if !ok || path == "" {
		return dsn
	}
	return "sqlite:" + inDir(dir, strings.TrimPrefix(path, "//"))
}

// sourceInDir resolves the path of a file: secret source against dir.
func sourceInDir(dir, src string) string {
	path, ok := strings.CutPrefix(strings.TrimSpace(src), "file:")
	if !ok || path == "" {
		return src
	}
	return "file:" + inDir(dir, path)
}

// moduleInDir resolves a module given as a relative path ("lib/x.so"); a bare file
// name ("libsofthsm2.so") is left to the dynamic loader's search.
func moduleInDir(dir, m string) string {
	if !strings.ContainsRune(m, filepath.Separator) {
		return m
	}
	return inDir(dir, m)
}

func allInDir(dir string, ps []string) {
	for i := range ps {
		ps[i] = inDir(dir, ps[i])
	}
}

func (p *partyConfig) resolvePaths(dir string) {
	p.tokenConfig.resolvePaths(dir)
	p.SignCert, p.KXCert, p.Root = inDir(dir, p.SignCert), inDir(dir, p.KXCert), inDir(dir, p.Root)
	allInDir(dir, p.CAChain)
	allInDir(dir, p.CRLs)
	p.CRLCA.TLSCA = inDir(dir, p.CRLCA.TLSCA)
	p.Store = dsnInDir(dir, p.Store)
	p.TLS.Cert, p.TLS.ClientCA = inDir(dir, p.TLS.Cert), inDir(dir, p.TLS.ClientCA)
}

func (g *gatewayConfig) resolvePaths(dir string) {
	g.partyConfig.resolvePaths(dir)
	g.LedgerFile = inDir(dir, g.LedgerFile)
}

func (m *merchantConfig) resolvePaths(dir string) {
	m.partyConfig.resolvePaths(dir)
	m.Gateway.KXCert, m.Gateway.TLSCA, m.Gateway.ClientCert = inDir(dir, m.Gateway.KXCert), inDir(dir, m.Gateway.TLSCA), inDir(dir, m.Gateway.ClientCert)
	m.Console.resolvePaths(dir)
	m.Shop.resolvePaths(dir)
}

func (s *signerConfig) resolvePaths(dir string) {
	s.tokenConfig.resolvePaths(dir)
	s.TLS.Cert, s.TLS.ClientCA = inDir(dir, s.TLS.Cert), inDir(dir, s.TLS.ClientCA)
	for i := range s.Keys {
		s.Keys[i].Cert = inDir(dir, s.Keys[i].Cert)
	}
}

func (f *caFileConfig) resolvePaths(dir string) {
	f.Store = dsnInDir(dir, f.Store)
	f.tokenConfig.resolvePaths(dir)
}
