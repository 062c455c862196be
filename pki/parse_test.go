package pki_test

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/ca/catest"
	"github.com/setpay/setpay/pki"
)

func chainDER(f *catest.Fixture) []byte {
	var b []byte
	for _, c := range f.H.MCA.Chain() {
		b = append(b, c.Raw...)
	}
	return b
}

func TestParseCertificates(t *testing.T) {
	f := catest.New(t)
	der := chainDER(f)
	certs, err := pki.ParseCertificates(der)
	require.NoError(t, err)
	require.Len(t, certs, 3)
	assert.True(t, certs[0].Equal(f.H.MCA.Certificate()))

	pemCerts, err := pki.ParsePEMCertificates(pki.EncodePEM(f.H.MCA.Chain()...))
	require.NoError(t, err)
	assert.Len(t, pemCerts, 3)

	one := f.H.Root.Certificate().Raw
	tooMany := bytes.Repeat(one, pki.MaxChainLength+1)
	huge := append([]byte{0x30, 0x83, 0x01, 0x00, 0x00}, make([]byte, 0x10000)...)
	cases := map[string][]byte{
		"empty":           nil,
		"too many":        tooMany,
		"truncated":       der[:len(der)-1],
		"trailing byte":   append(append([]byte(nil), der...), 0x00),
		"not a sequence":  {0x04, 0x01, 0x00},
		"oversized cert":  huge,
		"garbage in cert": {0x30, 0x03, 0x02, 0x01, 0x01},
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := pki.ParseCertificates(in)
			require.Error(t, err)
			assert.ErrorIs(t, err, pki.ReasonMalformed)
		})
	}
	_, err = pki.ParseCertificate(huge)
	assert.ErrorIs(t, err, pki.ReasonMalformed)
	_, err = pki.ParseCertificateList(make([][]byte, pki.MaxChainLength+1))
	assert.ErrorIs(t, err, pki.ReasonMalformed)
	_, err = pki.ParsePEMCertificates([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	assert.ErrorIs(t, err, pki.ReasonMalformed)
}

// FuzzParseCertificates feeds the chain parser mutations of a real chain.
func FuzzParseCertificates(f *testing.F) {
	fx := catest.New(f)
	f.Add(chainDER(fx))
	f.Add(fx.H.Root.Certificate().Raw)
	f.Add([]byte{0x30, 0x80})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		certs, err := pki.ParseCertificates(in)
		if err != nil {
			assert.Nil(t, certs)
			assert.Equal(t, pki.ReasonMalformed, pki.ReasonOf(err))
			return
		}
		assert.LessOrEqual(t, len(certs), pki.MaxChainLength)
		for _, c := range certs {
			assert.LessOrEqual(t, len(c.Raw), pki.MaxCertificateSize)
			_, _ = pki.RoleOf(c) // must not panic on any parsed certificate
			_, _ = pki.PurposeOf(c)
			_, _, _ = pki.EntityID(c)
		}
	})
}

func TestCertCache(t *testing.T) {
	f := catest.New(t)
	certs := f.H.MCA.Chain()
	c := pki.NewCertCache(2)
	tps := make([]pki.Thumbprint, len(certs))
	for i, cert := range certs {
		tps[i] = c.Add(cert)
		assert.Equal(t, pki.ThumbprintOf(cert), tps[i])
	}
	assert.Equal(t, 2, c.Len())
	_, ok := c.Get(tps[0])
	assert.False(t, ok, "least recently used entry evicted")
	got, ok := c.Get(tps[2])
	require.True(t, ok)
	assert.True(t, got.Equal(certs[2]))
	assert.Len(t, tps[0].String(), 64)

	// Concurrent use (run with -race).
	big := pki.NewCertCache(16)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				cert := certs[(g+i)%len(certs)]
				tp := big.Add(cert)
				if got, ok := big.Get(tp); ok {
					assert.True(t, got.Equal(cert), fmt.Sprint(g, i))
				}
			}
		}(g)
	}
	wg.Wait()
	assert.Equal(t, len(certs), big.Len())
}

func TestErrorsIsAs(t *testing.T) {
	err := fmt.Errorf("wrapped: %w", &pki.Error{Reason: pki.ReasonRevoked, Subject: "CN=x"})
	assert.ErrorIs(t, err, pki.ReasonRevoked)
	assert.ErrorIs(t, err, &pki.Error{Reason: pki.ReasonRevoked})
	assert.NotErrorIs(t, err, pki.ReasonExpired)
	var pe *pki.Error
	require.ErrorAs(t, err, &pe)
	assert.Equal(t, "CN=x", pe.Subject)
	assert.Equal(t, pki.ReasonRevoked, pki.ReasonOf(err))
	assert.Equal(t, pki.ReasonUnknown, pki.ReasonOf(fmt.Errorf("plain")))
}

// FuzzParsePEMAndCRL covers the other untrusted inputs of this package: PEM
// certificate bundles and DER CRLs handed to a CRL source.
func FuzzParsePEMAndCRL(f *testing.F) {
	fx := catest.New(f)
	f.Add(pki.EncodePEM(fx.H.MCA.Chain()...))
	for _, c := range fx.CRLs.All() {
		f.Add(c.Raw)
		f.Add(pki.EncodeCRLPEM(c))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if certs, err := pki.ParsePEMCertificates(in); err == nil {
			assert.LessOrEqual(t, len(certs), pki.MaxChainLength)
		} else {
			assert.Equal(t, pki.ReasonMalformed, pki.ReasonOf(err))
		}
		crls := pki.NewMemoryCRLs()
		if crls.PutDER(in) != nil {
			return
		}
		// A parsed CRL is only believed if its issuer signed it: checking the
		// brand against the fuzzed "root CRL" either passes (an unmodified
		// seed) or fails closed.
		v, err := pki.NewVerifier(fx.H.Root.Certificate(), crls)
		require.NoError(t, err)
		_, err = v.Verify(context.Background(), fx.H.Brand.Certificate(), nil, pki.Expect{Role: pki.RoleBrand}, time.Now())
		if err != nil {
			assert.Equal(t, pki.ReasonCRLUnavailable, pki.ReasonOf(err), err.Error())
		}
	})
}
