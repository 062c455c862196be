package ca_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/testenv"
	"github.com/setpay/setpay/pki"
)

// TestOpenSSLVerifyServiceCerts registers a cardholder, a merchant and a
// gateway through the gRPC service, revokes one certificate through it and
// lets `openssl verify -crl_check_all` judge every certificate with the CRLs
// fetched from the service.
func TestOpenSSLVerifyServiceCerts(t *testing.T) {
	testenv.Tool(t, "openssl")
	e := newRegEnv(t)
	ctx := context.Background()
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, b, 0o600))
		return p
	}

	ch, err := e.client.RegisterCardholder(ctx, ca.CardholderRegistration{PAN: cardOK, Expiry: cardExpiry,
		Fields: map[string]string{"postal_code": postalCode}, Key: walletKey(t, e)})
	require.NoError(t, err)
	leaves := map[string][]byte{"cardholder.pem": pki.EncodePEM(ch.Cert)}
	for _, r := range []pki.Role{pki.RoleMerchant, pki.RoleGateway} {
		secret, err := e.h.Issuing(r).Enroll(ctx, r, "ossl-1")
		require.NoError(t, err)
		sig, kx := tokenEntity(t, e, hsm.RSA2048)
		res, err := e.client.RegisterEntity(ctx, ca.EntityRegistration{Role: r, ID: "ossl-1", Secret: secret, SignatureKey: sig, KeyExchangeKey: kx})
		require.NoError(t, err)
		leaves[r.String()+"-sig.pem"] = pki.EncodePEM(res.Signature)
		leaves[r.String()+"-kx.pem"] = pki.EncodePEM(res.KeyExchange)
		if r == pki.RoleMerchant {
			require.NoError(t, e.client.Revoke(ctx, sig, res.Signature, ca.RevokeKeyCompromise))
		}
	}
	var crlPEM []byte
	for _, r := range []pki.Role{pki.RoleRoot, pki.RoleBrand, pki.RoleCCA, pki.RoleMCA, pki.RolePCA} {
		crl, err := e.client.CRL(ctx, r)
		require.NoError(t, err)
		crlPEM = append(crlPEM, pki.EncodeCRLPEM(crl)...)
	}
	root := write("root.pem", pki.EncodePEM(e.h.Root.Certificate()))
	chain := write("chain.pem", pki.EncodePEM(e.h.Brand.Certificate(), e.h.CCA.Certificate(), e.h.MCA.Certificate(), e.h.PCA.Certificate()))
	crls := write("crls.pem", crlPEM)
	for name, pemBytes := range leaves {
		t.Run(name, func(t *testing.T) {
			out, err := exec.CommandContext(ctx, "openssl", "verify", "-x509_strict", "-crl_check_all", "-CAfile", root,
				"-untrusted", chain, "-CRLfile", crls, write(name, pemBytes)).CombinedOutput()
			if name == "merchant-sig.pem" {
				assert.Error(t, err)
				assert.Contains(t, string(out), "certificate revoked")
				return
			}
			assert.NoError(t, err, "%s", out)
			assert.Contains(t, string(out), ": OK")
		})
	}
}
