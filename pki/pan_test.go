package pki_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/ca/catest"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/pki"
)

func TestValidatePAN(t *testing.T) {
	cases := []struct {
		pan  string
		want error
	}{
		{"4111111111111111", nil},
		{"5555555555554444", nil},
		{"378282246310005", nil},  // 15 digits
		{"6011000990139424", nil}, // 16
		{"4222222222222", nil},    // 13
		{"4111111111111112", pki.ErrPANLuhn},
		{"41111111111", pki.ErrPANLength},          // 11
		{"41111111111111111111", pki.ErrPANLength}, // 20
		{"4111 1111 1111 1111", pki.ErrPANNotDigits},
		{"4111-1111-1111-1111", pki.ErrPANNotDigits},
		{"", pki.ErrPANLength},
		{"411111111111111\u0661", pki.ErrPANNotDigits}, // Arabic-Indic digit
	}
	for _, c := range cases {
		t.Run(pki.MaskPAN(c.pan), func(t *testing.T) {
			err := pki.ValidatePAN(c.pan)
			if c.want == nil {
				assert.NoError(t, err)
				return
			}
			assert.ErrorIs(t, err, c.want)
			if len(c.pan) >= 4 {
				assert.NotContains(t, err.Error(), c.pan[len(c.pan)-4:], "error must not echo digits")
			}
		})
	}
}

func TestMaskPAN(t *testing.T) {
	assert.Equal(t, "411111******1111", pki.MaskPAN("4111111111111111"))
	assert.Equal(t, "378282*****0005", pki.MaskPAN("378282246310005"))
	assert.Equal(t, "*****", pki.MaskPAN("12345"))
	assert.Equal(t, "", pki.MaskPAN(""))
}

func TestValidateExpiry(t *testing.T) {
	for _, ok := range []string{"202901", "209912"} {
		assert.NoError(t, pki.ValidateExpiry(ok), ok)
	}
	for _, bad := range []string{"2029", "202913", "202900", "20291a", "12/29", "2029012"} {
		assert.ErrorIs(t, pki.ValidateExpiry(bad), pki.ErrExpiryFormat, bad)
	}
}

func TestPANBinding(t *testing.T) {
	wallet := bytes.Repeat([]byte{7}, 32)
	nonce := bytes.Repeat([]byte{9}, 32)
	ps, err := pki.PANSecret(wallet, nonce)
	require.NoError(t, err)
	require.Len(t, ps, pki.PANSecretLen)

	ps2, err := pki.PANSecret(wallet, nonce)
	require.NoError(t, err)
	assert.Equal(t, ps, ps2, "deterministic")

	otherWallet := bytes.Repeat([]byte{8}, 32)
	psW, err := pki.PANSecret(otherWallet, nonce)
	require.NoError(t, err)
	assert.NotEqual(t, ps, psW, "wallet secret matters")
	psN, err := pki.PANSecret(wallet, bytes.Repeat([]byte{1}, 32))
	require.NoError(t, err)
	assert.NotEqual(t, ps, psN, "CA nonce matters")

	_, err = pki.PANSecret(wallet[:8], nonce)
	assert.Error(t, err)
	_, err = pki.PANSecret(wallet, nonce[:8])
	assert.Error(t, err)

	id, err := pki.CardholderID("4111111111111111", "209912", ps)
	require.NoError(t, err)
	require.NoError(t, pki.ValidateCardholderID(id))
	again, err := pki.CardholderID("4111111111111111", "209912", ps)
	require.NoError(t, err)
	assert.Equal(t, id, again, "deterministic")

	for name, f := range map[string]func() (string, error){
		"other secret": func() (string, error) { return pki.CardholderID("4111111111111111", "209912", psW) },
		"other PAN":    func() (string, error) { return pki.CardholderID("5555555555554444", "209912", ps) },
		"other expiry": func() (string, error) { return pki.CardholderID("4111111111111111", "209911", ps) },
	} {
		v, err := f()
		require.NoError(t, err, name)
		assert.NotEqual(t, id, v, name)
	}
	_, err = pki.CardholderID("4111111111111112", "209912", ps)
	assert.ErrorIs(t, err, pki.ErrPANLuhn)
	_, err = pki.CardholderID("4111111111111111", "209912", ps[:16])
	assert.Error(t, err)
}

// TestCardholderCertificateHidesPAN issues a real cardholder certificate and
// checks it holds neither the PAN nor its plain hash, while the gateway-side
// check with the right card data and secret succeeds.
func TestCardholderCertificateHidesPAN(t *testing.T) {
	ctx := context.Background()
	f := catest.New(t)
	const pan, expiry = "5555555555554444", "209912"
	wallet := bytes.Repeat([]byte{0x42}, 32)
	nonce, err := f.H.CCA.NewCANonce()
	require.NoError(t, err)
	key := f.Key(t, pki.AlgECDSAP256, hsm.UsageSign)
	cert, err := f.H.CCA.IssueCardholder(ctx, ca.CardholderRequest{
		CSR: catest.CSR(t, key, pan), // a CSR subject, even a PAN, is ignored
		PAN: pan, Expiry: expiry, WalletSecret: wallet, CANonce: nonce,
	})
	require.NoError(t, err)

	plain := sha256.Sum256([]byte(pan))
	plainExp := sha256.Sum256([]byte(pan + expiry))
	for _, needle := range [][]byte{
		[]byte(pan), []byte(pki.MaskPAN(pan)), []byte(pan[len(pan)-8:]),
		plain[:], []byte(hex.EncodeToString(plain[:])), []byte(base64.RawURLEncoding.EncodeToString(plain[:])),
		plainExp[:], []byte(hex.EncodeToString(plainExp[:])), []byte(base64.RawURLEncoding.EncodeToString(plainExp[:])),
	} {
		assert.False(t, bytes.Contains(cert.Raw, needle), "certificate contains %q", needle)
	}

	ps, err := pki.PANSecret(wallet, nonce)
	require.NoError(t, err)
	id, err := pki.CardholderID(pan, expiry, ps)
	require.NoError(t, err)
	assert.Equal(t, pki.EntityCN(pki.RoleCardholder, id), cert.Subject.CommonName)
	_, err = f.Verify(cert, pki.Expect{Role: pki.RoleCardholder, Purpose: pki.PurposeSignature})
	require.NoError(t, err)

	assert.NoError(t, pki.CheckCardholderPAN(cert, pan, expiry, ps))
	err = pki.CheckCardholderPAN(cert, "4111111111111111", expiry, ps)
	assert.ErrorIs(t, err, pki.ReasonPANMismatch)
	assert.NotContains(t, err.Error(), "4111111111111111")
	assert.ErrorIs(t, pki.CheckCardholderPAN(cert, pan, "209911", ps), pki.ReasonPANMismatch)
	wrongSecret, err := pki.PANSecret(bytes.Repeat([]byte{0x43}, 32), nonce)
	require.NoError(t, err)
	assert.ErrorIs(t, pki.CheckCardholderPAN(cert, pan, expiry, wrongSecret), pki.ReasonPANMismatch)
	// Card validity caps the certificate.
	assert.False(t, cert.NotAfter.After(mustDate(t, "2100-01-01")))
}
