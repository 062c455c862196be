package main

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/softhsm"
)

// tokenCases are the token-key mistakes every service configuration reports the same
// way (issue 11, item 5): the token is named by exactly one of token, token_serial and
// token_slot, and the field in error is named.
func tokenCases[T any](tok func(*T) *tokenConfig) []configCase[T] {
	k := func(f func(*tokenConfig)) func(*T) { return func(c *T) { f(tok(c)) } }
	slot := func(n int) *int { return &n }
	return []configCase[T]{
		{"token and token_serial", k(func(c *tokenConfig) { c.Token, c.TokenSerial = "gw", "8d2f" }), []string{"token_serial"}},
		{"token and token_slot", k(func(c *tokenConfig) { c.Token, c.TokenSlot = "gw", slot(0) }), []string{"token_slot"}},
		{"token_serial and token_slot", k(func(c *tokenConfig) { c.Token, c.TokenSerial, c.TokenSlot = "", "8d2f", slot(3) }), []string{"token_slot"}},
		{"token, token_serial and token_slot", k(func(c *tokenConfig) { c.Token, c.TokenSerial, c.TokenSlot = "gw", "8d2f", slot(3) }),
			[]string{"token_serial", "token_slot"}},
		{"no token by any key", k(func(c *tokenConfig) { c.Token, c.TokenSerial, c.TokenSlot = "", "", nil }), []string{"token"}},
		{"negative token_slot", k(func(c *tokenConfig) { c.Token, c.TokenSlot = "", slot(-1) }), []string{"token_slot"}},
		{"negative max_sessions", k(func(c *tokenConfig) { c.MaxSessions = -2 }), []string{"max_sessions"}},
		{"softhsm_dir that is not one", k(func(c *tokenConfig) { c.SoftHSMDir = "/nonexistent/softhsm" }), []string{"softhsm_dir"}},
	}
}

// TestTokenKeysSelectBySerialOrSlotOrSoftHSMDir: a token named by serial or by slot
// (slot 0 included) is valid, and a softhsm_dir stands in for module and pin_source.
func TestTokenKeysSelectBySerialOrSlotOrSoftHSMDir(t *testing.T) {
	d, err := softhsm.Create(filepath.Join(t.TempDir(), "softhsm"))
	require.NoError(t, err)
	zero := 0
	for _, tc := range []struct {
		name string
		tok  tokenConfig
	}{
		{"token_serial", tokenConfig{Module: "/m.so", TokenSerial: "8d2f51c0a1b2c3d4", PINSource: "env:PIN"}},
		{"token_slot 0", tokenConfig{Module: "/m.so", TokenSlot: &zero, PINSource: "env:PIN"}},
		{"softhsm_dir without module or pin_source", tokenConfig{SoftHSMDir: d.Root, Token: "gw"}},
		{"max_sessions", tokenConfig{Module: "/m.so", Token: "gw", PINSource: "env:PIN", MaxSessions: 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := gatewayConfig{partyConfig: validParty(), PANHashKey: testKeyURI}
			g.tokenConfig = tc.tok
			assert.NoError(t, g.validate())
			s := signerConfig{tokenConfig: tc.tok, Listen: "127.0.0.1:7600"}
			s.TLS.Cert, s.TLS.Key, s.TLS.ClientCA = "tls.pem", testKeyURI, "ca.pem"
			assert.NoError(t, s.validate())
			ca := caFileConfig{Store: "sqlite:setpay.db", RootToken: "setpay-root", tokenConfig: tc.tok}
			assert.NoError(t, ca.validate())
		})
	}
}

// TestTokenKeyPathsResolveAgainstTheFile: softhsm_dir, a module path and a file: PIN
// source are relative to the configuration file.
func TestTokenKeyPathsResolveAgainstTheFile(t *testing.T) {
	tc := tokenConfig{SoftHSMDir: "softhsm", Module: "lib/p11.so", PINSource: "file:pin"}
	tc.resolvePaths("/srv/gw")
	assert.Equal(t, tokenConfig{SoftHSMDir: "/srv/gw/softhsm", Module: "/srv/gw/lib/p11.so", PINSource: "file:/srv/gw/pin"}, tc)
	abs := tokenConfig{SoftHSMDir: "/var/lib/setpay/softhsm", Module: "libsofthsm2.so"}
	abs.resolvePaths("/srv/gw")
	assert.Equal(t, tokenConfig{SoftHSMDir: "/var/lib/setpay/softhsm", Module: "libsofthsm2.so"}, abs)
}
