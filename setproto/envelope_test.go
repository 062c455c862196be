package setproto_test

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/cms"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/setproto/setpb"
)

// TestEnvelopeHasOneRecipient: an envelope addressed to its recipient and to
// anybody else (the merchant, for a PI) is refused with EXTRA_RECIPIENT by Unseal,
// before the key is used, and by CheckSoleRecipient, which the merchant runs on the
// PI envelope it cannot open. The one-recipient envelope passes both.
func TestEnvelopeHasOneRecipient(t *testing.T) {
	_, gwCert, gwKey, msgs := seeds(t)
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	require.NoError(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "merchant:shop-1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageKeyEncipherment}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, otherKey.Public(), otherKey)
	require.NoError(t, err)
	other, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	kind := setpb.ContentKind_PAYMENT_INSTRUCTIONS
	seal := func(to ...*x509.Certificate) []byte {
		env, err := cms.Encrypt(msgs["pi"], cms.EncryptOptions{Recipients: to, ContentType: setproto.ContentType(kind), Cipher: cms.AES256GCM})
		require.NoError(t, err)
		return env
	}

	for name, env := range map[string][]byte{
		"gateway and merchant": seal(gwCert, other),
		"merchant and gateway": seal(other, gwCert),
		"gateway twice":        seal(gwCert, gwCert),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := setproto.Unseal(env, kind, gwCert, gwKey)
			assert.Equal(t, setpb.Reason_EXTRA_RECIPIENT, setproto.ReasonOf(err), "%v", err)
			err = setproto.CheckSoleRecipient(env, kind, gwCert)
			assert.Equal(t, setpb.Reason_EXTRA_RECIPIENT, setproto.ReasonOf(err), "%v", err)
		})
	}
	err = setproto.CheckSoleRecipient(seal(other), kind, gwCert)
	assert.Equal(t, setpb.Reason_DECRYPT_FAILED, setproto.ReasonOf(err), "not for the gateway: %v", err)

	pi, err := setproto.Unseal(seal(gwCert), kind, gwCert, gwKey)
	require.NoError(t, err)
	assert.Equal(t, msgs["pi"], pi)
	assert.NoError(t, setproto.CheckSoleRecipient(seal(gwCert), kind, gwCert))
}

// TestOIAndPINameTheGateway: an OI or PI without the gateway id or the gateway's
// key-exchange thumbprint (what a wallet of an older version sends) is MALFORMED.
func TestOIAndPINameTheGateway(t *testing.T) {
	_, _, _, msgs := seeds(t)
	oi, err := setproto.ParseOrderInfo(msgs["oi"])
	require.NoError(t, err)
	pi, err := setproto.ParsePaymentInstructions(msgs["pi"])
	require.NoError(t, err)
	for name, mut := range map[string]func(){
		"OI without gateway id":         func() { oi.GatewayId = "" },
		"OI with a short thumbprint":    func() { oi.GatewayKxThumbprint = oi.GatewayKxThumbprint[:20] },
		"OI without offer id":           func() { oi.OfferId = "" },
		"PI without gateway id":         func() { pi.GatewayId = "" },
		"PI without gateway thumbprint": func() { pi.GatewayKxThumbprint = nil },
	} {
		t.Run(name, func(t *testing.T) {
			oi, _ = setproto.ParseOrderInfo(msgs["oi"])
			pi, _ = setproto.ParsePaymentInstructions(msgs["pi"])
			mut()
			ob, err := setproto.Marshal(oi)
			require.NoError(t, err)
			pb, err := setproto.Marshal(pi)
			require.NoError(t, err)
			_, errOI := setproto.ParseOrderInfo(ob)
			_, errPI := setproto.ParsePaymentInstructions(pb)
			err = errOI
			if err == nil {
				err = errPI
			}
			assert.Equal(t, setpb.Reason_MALFORMED, setproto.ReasonOf(err), "%v", err)
		})
	}
}
