package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// namedFields lists the fields an error from validate names, in order.
func namedFields(err error) []string {
	var out []string
	var walk func(error)
	walk = func(err error) {
		if fe, ok := err.(*fieldError); ok {
			out = append(out, fe.Field)
			return
		}
		switch j := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range j.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(j.Unwrap())
		}
	}
	walk(err)
	return out
}

const (
	testKeyURI = "pkcs11:token=t;object=k;type=private"
	testSecret = "hunter2-not-a-source"
)

func validParty() partyConfig {
	var p partyConfig
	p.Module, p.Token, p.PINSource, p.Listen = "/usr/lib/softhsm/libsofthsm2.so", "gw", "env:SETPAY_PIN", "127.0.0.1:7501"
	p.SignKey, p.SignCert, p.KXKey, p.KXCert, p.Root = testKeyURI, "sign.pem", testKeyURI, "kx.pem", "root.pem"
	p.CAChain, p.CRLs, p.Store = []string{"chain.pem"}, []string{"crls.pem"}, "sqlite:gw.db"
	p.TLS.Cert, p.TLS.Key, p.TLS.ClientCA = "tls.pem", testKeyURI, "tls-ca.pem"
	return p
}

// configCase changes one valid configuration and names the fields that must be reported.
type configCase[T any] struct {
	name   string
	change func(*T)
	fields []string
}

func runConfigCases[T any](t *testing.T, valid func() T, validate func(*T) error, cases []configCase[T]) {
	t.Helper()
	v := valid()
	require.NoError(t, validate(&v), "the base configuration is valid")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.change(&c)
			err := validate(&c)
			require.Error(t, err)
			assert.Equal(t, tc.fields, namedFields(err), "error: %v", err)
			for _, f := range tc.fields {
				assert.Contains(t, err.Error(), f+": ")
			}
			assert.NotContains(t, err.Error(), testSecret, "a value that may be a secret is never shown")
		})
	}
}

func partyCases[T any](party func(*T) *partyConfig) []configCase[T] {
	p := func(f func(*partyConfig)) func(*T) { return func(c *T) { f(party(c)) } }
	return append(tokenCases(func(c *T) *tokenConfig { return &party(c).tokenConfig }), []configCase[T]{
		{"no module", p(func(c *partyConfig) { c.Module = "" }), []string{"module"}},
		{"no token", p(func(c *partyConfig) { c.Token = "" }), []string{"token"}},
		{"no pin_source", p(func(c *partyConfig) { c.PINSource = "" }), []string{"pin_source"}},
		{"PIN in place of its source", p(func(c *partyConfig) { c.PINSource = testSecret }), []string{"pin_source"}},
		{"empty env: source", p(func(c *partyConfig) { c.PINSource = "env:" }), []string{"pin_source"}},
		{"no listen", p(func(c *partyConfig) { c.Listen = "" }), []string{"listen"}},
		{"listen without port", p(func(c *partyConfig) { c.Listen = "localhost" }), []string{"listen"}},
		{"no sign_key", p(func(c *partyConfig) { c.SignKey = "" }), []string{"sign_key"}},
		{"sign_key not a URI", p(func(c *partyConfig) { c.SignKey = "gateway-sig" }), []string{"sign_key"}},
		{"no sign_cert", p(func(c *partyConfig) { c.SignCert = "" }), []string{"sign_cert"}},
		{"no kx_key", p(func(c *partyConfig) { c.KXKey = "" }), []string{"kx_key"}},
		{"kx_key with pin-value", p(func(c *partyConfig) { c.KXKey = testKeyURI + "?pin-value=1234" }), []string{"kx_key"}},
		{"no kx_cert", p(func(c *partyConfig) { c.KXCert = "" }), []string{"kx_cert"}},
		{"no root", p(func(c *partyConfig) { c.Root = "" }), []string{"root"}},
		{"empty ca_chain entry", p(func(c *partyConfig) { c.CAChain = []string{"a.pem", ""} }), []string{"ca_chain[1]"}},
		{"empty crls entry", p(func(c *partyConfig) { c.CRLs = []string{""} }), []string{"crls[0]"}},
		{"no crls", p(func(c *partyConfig) { c.CRLs = nil }), []string{"crls"}},
		{"crl_refresh not a duration", p(func(c *partyConfig) { c.CRLRefresh = "hourly" }), []string{"crl_refresh"}},
		{"crl_refresh not positive", p(func(c *partyConfig) { c.CRLRefresh = "-5m" }), []string{"crl_refresh"}},
		{"no store", p(func(c *partyConfig) { c.Store = "" }), []string{"store"}},
		{"store without scheme", p(func(c *partyConfig) { c.Store = "./gw.db" }), []string{"store"}},
		{"no tls.cert", p(func(c *partyConfig) { c.TLS.Cert = "" }), []string{"tls.cert"}},
		{"no tls.key", p(func(c *partyConfig) { c.TLS.Key = "" }), []string{"tls.key"}},
		{"metrics_listen without port", p(func(c *partyConfig) { c.MetricsListen = "9090" }), []string{"metrics_listen"}},
		{"negative limits", p(func(c *partyConfig) {
			c.Limits = limitsConfig{MaxMessageBytes: -1, RatePerSecond: -2, RateBurst: -3, RateMaxClients: -4}
		}), []string{"limits.max_message_bytes", "limits.rate_per_second", "limits.rate_burst", "limits.rate_max_clients"}},
		{"several at once", p(func(c *partyConfig) { c.Listen, c.SignKey, c.Store = "", "", "" }), []string{"listen", "sign_key", "store"}},
	}...)
}

func TestGatewayConfigValidate(t *testing.T) {
	valid := func() gatewayConfig {
		return gatewayConfig{partyConfig: validParty(), PANHashKey: testKeyURI}
	}
	cases := append(partyCases(func(c *gatewayConfig) *partyConfig { return &c.partyConfig }),
		configCase[gatewayConfig]{"no tls.client_ca", func(c *gatewayConfig) { c.TLS.ClientCA = "" }, []string{"tls.client_ca"}},
		configCase[gatewayConfig]{"no pan_hash_key", func(c *gatewayConfig) { c.PANHashKey = "" }, []string{"pan_hash_key"}},
		configCase[gatewayConfig]{"pan_hash_key not a URI", func(c *gatewayConfig) { c.PANHashKey = testSecret }, []string{"pan_hash_key"}},
		configCase[gatewayConfig]{"a software key file (before the token-held key)", func(c *gatewayConfig) { c.LegacyPANHashKeySource = "file:pan.key" },
			[]string{"pan_hash_key_source"}},
	)
	runConfigCases(t, valid, (*gatewayConfig).validate, cases)
}

func TestMerchantConfigValidate(t *testing.T) {
	valid := func() merchantConfig {
		m := merchantConfig{partyConfig: validParty(), Brand: "SETPay"}
		m.Gateway.Address, m.Gateway.KXCert, m.Gateway.TLSCA = "127.0.0.1:7501", "gw-kx.pem", "tls-ca.pem"
		m.Gateway.ClientCert, m.Gateway.ClientKey = "client.pem", testKeyURI
		m.ChallengeKey = testKeyURI
		return m
	}
	cases := append(partyCases(func(c *merchantConfig) *partyConfig { return &c.partyConfig }),
		configCase[merchantConfig]{"no gateway.address", func(c *merchantConfig) { c.Gateway.Address = "" }, []string{"gateway.address"}},
		configCase[merchantConfig]{"gateway.address without port", func(c *merchantConfig) { c.Gateway.Address = "gw" }, []string{"gateway.address"}},
		configCase[merchantConfig]{"no gateway.kx_cert", func(c *merchantConfig) { c.Gateway.KXCert = "" }, []string{"gateway.kx_cert"}},
		configCase[merchantConfig]{"no gateway.tls_ca", func(c *merchantConfig) { c.Gateway.TLSCA = "" }, []string{"gateway.tls_ca"}},
		configCase[merchantConfig]{"no gateway.tls_cert", func(c *merchantConfig) { c.Gateway.ClientCert = "" }, []string{"gateway.tls_cert"}},
		configCase[merchantConfig]{"no gateway.tls_key", func(c *merchantConfig) { c.Gateway.ClientKey = "" }, []string{"gateway.tls_key"}},
		configCase[merchantConfig]{"no challenge_key", func(c *merchantConfig) { c.ChallengeKey = "" }, []string{"challenge_key"}},
		configCase[merchantConfig]{"challenge_key not a URI", func(c *merchantConfig) { c.ChallengeKey = testSecret }, []string{"challenge_key"}},
	)
	runConfigCases(t, valid, (*merchantConfig).validate, cases)
}

func TestSignerConfigValidate(t *testing.T) {
	valid := func() signerConfig {
		s := signerConfig{tokenConfig: tokenConfig{Module: "/m.so", Token: "t", PINSource: "file:/pin"}, Listen: "127.0.0.1:7600"}
		s.TLS.Cert, s.TLS.Key, s.TLS.ClientCA = "tls.pem", testKeyURI, "ca.pem"
		s.Keys = append(s.Keys, struct {
			Name string `yaml:"name"`
			Key  string `yaml:"key"`
			Cert string `yaml:"cert"`
		}{Name: "gateway-sign", Key: testKeyURI})
		return s
	}
	runConfigCases(t, valid, (*signerConfig).validate, append(tokenCases(func(c *signerConfig) *tokenConfig { return &c.tokenConfig }), []configCase[signerConfig]{
		{"no module", func(c *signerConfig) { c.Module = "" }, []string{"module"}},
		{"no token", func(c *signerConfig) { c.Token = "" }, []string{"token"}},
		{"PIN in place of its source", func(c *signerConfig) { c.PINSource = testSecret }, []string{"pin_source"}},
		{"no listen", func(c *signerConfig) { c.Listen = "" }, []string{"listen"}},
		{"no tls.cert", func(c *signerConfig) { c.TLS.Cert = "" }, []string{"tls.cert"}},
		{"tls.key not a URI", func(c *signerConfig) { c.TLS.Key = "tls" }, []string{"tls.key"}},
		{"no tls.client_ca", func(c *signerConfig) { c.TLS.ClientCA = "" }, []string{"tls.client_ca"}},
		{"key without name", func(c *signerConfig) { c.Keys[0].Name = "" }, []string{"keys[0].name"}},
		{"key without URI", func(c *signerConfig) { c.Keys[0].Key = "" }, []string{"keys[0].key"}},
		{"negative max_sessions", func(c *signerConfig) { c.MaxSessions = -1 }, []string{"max_sessions"}},
	}...))
}

func TestCAFileConfigValidate(t *testing.T) {
	valid := func() caFileConfig {
		return caFileConfig{Store: "sqlite:setpay.db", RootToken: "setpay-root", tokenConfig: tokenConfig{Token: "setpay-ca"}, Brand: "SETPay"}
	}
	runConfigCases(t, valid, (*caFileConfig).validate, append(tokenCases(func(c *caFileConfig) *tokenConfig { return &c.tokenConfig }), []configCase[caFileConfig]{
		{"no store", func(c *caFileConfig) { c.Store = "" }, []string{"store"}},
		{"store without scheme", func(c *caFileConfig) { c.Store = "setpay.db" }, []string{"store"}},
		{"no token", func(c *caFileConfig) { c.Token = "" }, []string{"token"}},
		{"no root_token", func(c *caFileConfig) { c.RootToken = "" }, []string{"root_token"}},
		{"PIN in place of its source", func(c *caFileConfig) { c.PINSource = testSecret }, []string{"pin_source"}},
	}...))
}

// TestLoadConfigNamesEveryMissingField: an empty gateway configuration lists every
// required field, each by name, in one error.
func TestLoadConfigNamesEveryMissingField(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	require.NoError(t, os.WriteFile(path, []byte("ledger: []\n"), 0o600))
	var cfg gatewayConfig
	err := loadConfig(path, &cfg)
	require.Error(t, err)
	var fe *fieldError
	assert.True(t, errors.As(err, &fe))
	assert.Equal(t, []string{"module", "token", "pin_source", "listen", "sign_key", "sign_cert", "kx_key", "kx_cert",
		"root", "crls", "store", "tls.cert", "tls.key", "tls.client_ca", "pan_hash_key"}, namedFields(err))
	assert.Contains(t, err.Error(), path)
}
