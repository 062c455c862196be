package cms_test

import (
	"bytes"
	"crypto/x509"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/setpay/setpay/cms"
)

var message = []byte("SET protocol message: PInitReq, not a real PAN")

func TestSignVerifyRoundTrip(t *testing.T) {
	f := getFixture(t)
	tests := []struct {
		name     string
		signer   party
		pss      bool
		detached bool
		embed    bool
		ski      bool
		ct       x509.OID
	}{
		{name: "RSA PKCS1v15 embedded", signer: f.rsa, embed: true},
		{name: "RSA PSS embedded", signer: f.rsa, pss: true, embed: true},
		{name: "RSA PSS detached cached cert", signer: f.rsa, pss: true, detached: true},
		{name: "ECDSA P-256", signer: f.p256, embed: true, ct: cms.ProtocolContentType(1)},
		{name: "ECDSA P-384 detached", signer: f.p384, detached: true, embed: true},
		{name: "ECDSA P-256 by SKI", signer: f.p256, ski: true, ct: cms.ProtocolContentType(7)},
		{name: "RSA by SKI no certs", signer: f.rsa, ski: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := cms.SignOptions{
				ContentType:  tc.ct,
				Signer:       tc.signer.key,
				Certificate:  tc.signer.cert,
				Detached:     tc.detached,
				SigningTime:  testNow,
				PSS:          tc.pss,
				SubjectKeyID: tc.ski,
			}
			if tc.embed {
				opts.Certificates = []*x509.Certificate{tc.signer.cert, f.root.cert}
			}
			der, err := cms.Sign(message, opts)
			require.NoError(t, err)

			sd, err := cms.ParseSignedData(der)
			require.NoError(t, err)
			wantCT := tc.ct
			if len(wantCT.String()) == 0 {
				wantCT = cms.DataContentType()
			}
			assert.True(t, sd.ContentType().Equal(wantCT), "content type %s", sd.ContentType())
			assert.True(t, sd.SigningTime().Equal(testNow))
			assert.Equal(t, tc.detached, sd.Detached())
			if tc.embed {
				assert.Len(t, sd.Certificates(), 2)
			} else {
				assert.Empty(t, sd.Certificates())
			}

			vo := cms.VerifyOptions{}
			if !tc.embed {
				vo.Certificates = []*x509.Certificate{f.p384.cert, tc.signer.cert} // a cache
			}
			if tc.detached {
				assert.Nil(t, sd.Content())
				vo.Content = message
			} else {
				assert.Equal(t, message, sd.Content())
			}
			signer, err := sd.Verify(vo)
			require.NoError(t, err)
			assert.True(t, signer.Equal(tc.signer.cert))
		})
	}
}

func TestSignEmptyAndLargeContent(t *testing.T) {
	f := getFixture(t)
	for _, content := range [][]byte{{}, bytes.Repeat([]byte{0xA5}, 1<<20)} {
		der, err := cms.Sign(content, cms.SignOptions{Signer: f.p256.key, Certificate: f.p256.cert, SigningTime: testNow})
		require.NoError(t, err)
		sd, err := cms.ParseSignedData(der)
		require.NoError(t, err)
		_, err = sd.Verify(cms.VerifyOptions{Certificates: []*x509.Certificate{f.p256.cert}})
		require.NoError(t, err)
		assert.Equal(t, len(content), len(sd.Content()))
	}
}

func TestSigningTimeOutsideUTCTimeRange(t *testing.T) {
	f := getFixture(t)
	when := time.Date(2051, 1, 2, 3, 4, 5, 0, time.UTC) // GeneralizedTime
	der, err := cms.Sign(message, cms.SignOptions{Signer: f.p256.key, Certificate: f.p256.cert, SigningTime: when})
	require.NoError(t, err)
	sd, err := cms.ParseSignedData(der)
	require.NoError(t, err)
	assert.True(t, sd.SigningTime().Equal(when))
}

func TestSignOptionErrors(t *testing.T) {
	f := getFixture(t)
	tests := []struct {
		name string
		opts cms.SignOptions
		want string
	}{
		{"no signer", cms.SignOptions{Certificate: f.rsa.cert, SigningTime: testNow}, "Signer and Certificate"},
		{"no time", cms.SignOptions{Signer: f.rsa.key, Certificate: f.rsa.cert}, "SigningTime"},
		{"key mismatch", cms.SignOptions{Signer: f.p256.key, Certificate: f.rsa.cert, SigningTime: testNow}, "does not match"},
		{"PSS with ECDSA", cms.SignOptions{Signer: f.p256.key, Certificate: f.p256.cert, SigningTime: testNow, PSS: true}, "PSS requested"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cms.Sign(message, tc.opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// mutate returns a copy of der with the first occurrence of old replaced.
func mutate(t *testing.T, der, old, new []byte) []byte {
	t.Helper()
	require.Equal(t, len(old), len(new), "mutation must keep lengths")
	i := bytes.Index(der, old)
	require.GreaterOrEqual(t, i, 0, "pattern not found")
	out := bytes.Clone(der)
	copy(out[i:], new)
	return out
}

func TestVerifyRejects(t *testing.T) {
	f := getFixture(t)
	sign := func(o cms.SignOptions) []byte {
		o.SigningTime = testNow
		der, err := cms.Sign(message, o)
		require.NoError(t, err)
		return der
	}
	rsaEmbedded := sign(cms.SignOptions{Signer: f.rsa.key, Certificate: f.rsa.cert, Certificates: []*x509.Certificate{f.rsa.cert}})
	rsaBare := sign(cms.SignOptions{Signer: f.rsa.key, Certificate: f.rsa.cert})
	ecBare := sign(cms.SignOptions{Signer: f.p256.key, Certificate: f.p256.cert, ContentType: cms.ProtocolContentType(1)})
	ecDetached := sign(cms.SignOptions{Signer: f.p256.key, Certificate: f.p256.cert, Detached: true})

	sha256OID := []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01}
	unknownOID := []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x7f}
	utc := []byte("260314150926Z")
	ct1, _ := cms.ProtocolContentType(1).MarshalBinary()
	ct2, _ := cms.ProtocolContentType(2).MarshalBinary()
	tampered := bytes.Clone(message)
	tampered[0] ^= 1

	tests := []struct {
		name      string
		der       []byte
		opts      cms.VerifyOptions
		parseErr  string // non-empty: ParseSignedData must fail with this
		verifyErr string
	}{
		{name: "tampered content", der: mutate(t, rsaEmbedded, message, tampered), verifyErr: "messageDigest"},
		{name: "tampered signingTime", der: mutate(t, rsaEmbedded, utc, []byte("260314150927Z")), verifyErr: "invalid signature"},
		{name: "tampered eContentType", der: mutate(t, ecBare, ct1, ct2), opts: cms.VerifyOptions{Certificates: []*x509.Certificate{f.p256.cert}}, verifyErr: "contentType attribute"},
		{name: "signer cert missing", der: rsaBare, opts: cms.VerifyOptions{Certificates: []*x509.Certificate{f.p256.cert, f.rsa2.cert}}, verifyErr: "signer certificate not found"},
		{name: "impostor cert with same issuer and serial", der: ecBare, opts: cms.VerifyOptions{Certificates: []*x509.Certificate{f.impostor.cert}}, verifyErr: "invalid signature"},
		{name: "RSA signature with EC cert", der: rsaBare, opts: cms.VerifyOptions{Certificates: []*x509.Certificate{rsaAsEC(t, f)}}, verifyErr: "does not fit"},
		{name: "zero SignerInfos", der: rewriteSignerInfos(t, rsaBare, 0), parseErr: "exactly one SignerInfo, found none"},
		{name: "two SignerInfos", der: rewriteSignerInfos(t, rsaBare, 2), parseErr: "exactly one SignerInfo, found several"},
		{name: "unknown digest OID", der: bytes.ReplaceAll(rsaBare, sha256OID, unknownOID), parseErr: "digest algorithm 2.16.840.1.101.3.4.2.127 not allowed"},
		{name: "detached without content", der: ecDetached, opts: cms.VerifyOptions{Certificates: []*x509.Certificate{f.p256.cert}}, verifyErr: "no content was supplied"},
		{name: "detached with wrong content", der: ecDetached, opts: cms.VerifyOptions{Certificates: []*x509.Certificate{f.p256.cert}, Content: tampered}, verifyErr: "messageDigest"},
		{name: "attached plus supplied content", der: rsaEmbedded, opts: cms.VerifyOptions{Content: message}, verifyErr: "embeds its content"},
		{name: "trailing garbage", der: append(bytes.Clone(rsaBare), 0), parseErr: "malformed"},
		{name: "garbage", der: []byte("not DER at all"), parseErr: "malformed"},
		{name: "empty", der: nil, parseErr: "malformed"},
		{name: "envelope is not SignedData", der: mustEncrypt(t, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}}), parseErr: "want id-signedData"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sd, err := cms.ParseSignedData(tc.der)
			if tc.parseErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.parseErr)
				return
			}
			require.NoError(t, err)
			_, err = sd.Verify(tc.opts)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.verifyErr)
		})
	}
}

// rsaAsEC returns a certificate carrying rsa's issuer and serial but an EC key.
func rsaAsEC(t *testing.T, f *fixture) *x509.Certificate {
	t.Helper()
	c := *f.rsa.cert
	c.PublicKey = f.p256.cert.PublicKey
	return &c
}

// rewriteSignerInfos re-encodes a SignedData with its single SignerInfo
// repeated n times.
func rewriteSignerInfos(t *testing.T, der []byte, n int) []byte {
	t.Helper()
	s := cryptobyte.String(der)
	var ci, oid, body, sd cryptobyte.String
	require.True(t, s.ReadASN1(&ci, cbasn1.SEQUENCE) && ci.ReadASN1Element(&oid, cbasn1.OBJECT_IDENTIFIER) &&
		ci.ReadASN1(&body, cbasn1.Tag(0).ContextSpecific().Constructed()) && body.ReadASN1(&sd, cbasn1.SEQUENCE))
	var elems []cryptobyte.String
	for !sd.Empty() {
		var e cryptobyte.String
		var tag cbasn1.Tag
		require.True(t, sd.ReadAnyASN1Element(&e, &tag))
		elems = append(elems, e)
	}
	signerInfos := elems[len(elems)-1]
	var si cryptobyte.String
	require.True(t, signerInfos.ReadASN1(&si, cbasn1.SET))
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(oid)
		b.AddASN1(cbasn1.Tag(0).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, e := range elems[:len(elems)-1] {
					b.AddBytes(e)
				}
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
					for range n {
						b.AddBytes(si)
					}
				})
			})
		})
	})
	return b.BytesOrPanic()
}

func TestParseTruncations(t *testing.T) {
	f := getFixture(t)
	der, err := cms.Sign(message, cms.SignOptions{Signer: f.p256.key, Certificate: f.p256.cert,
		Certificates: []*x509.Certificate{f.p256.cert}, SigningTime: testNow})
	require.NoError(t, err)
	for n := 0; n < len(der); n++ {
		_, err := cms.ParseSignedData(der[:n])
		require.Error(t, err, "truncated to %d bytes", n)
	}
}

func TestParseLimits(t *testing.T) {
	f := getFixture(t)
	der, err := cms.Sign(message, cms.SignOptions{Signer: f.p256.key, Certificate: f.p256.cert,
		Certificates: []*x509.Certificate{f.p256.cert, f.root.cert, f.rsa.cert}, SigningTime: testNow})
	require.NoError(t, err)

	_, err = cms.Limits{MaxSize: len(der) - 1}.ParseSignedData(der)
	assert.ErrorContains(t, err, "exceeds the limit")
	_, err = cms.Limits{MaxCertificates: 2}.ParseSignedData(der)
	assert.ErrorContains(t, err, "more than 2 embedded certificates")
	_, err = cms.Limits{MaxSize: len(der), MaxCertificates: 3}.ParseSignedData(der)
	assert.NoError(t, err)
}

// TestDigestAlgorithmsSetMustMatchTheSigner: digestAlgorithms is outside the
// signature, so a changed entry must be refused, not ignored.
func TestDigestAlgorithmsSetMustMatchTheSigner(t *testing.T) {
	f := getFixture(t)
	der, err := cms.Sign([]byte("authorization request"), cms.SignOptions{Signer: f.p256.key, Certificate: f.p256.cert, SigningTime: testNow})
	require.NoError(t, err)
	sha256OID := []byte{0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01}
	require.Equal(t, 2, bytes.Count(der, sha256OID), "digestAlgorithms and the SignerInfo each name SHA-256")
	cases := []struct {
		name    string
		lastOID byte
		mention string
	}{
		{"downgraded to SHA-224 (not allowed)", 0x04, "not allowed"},
		{"swapped for SHA-384 (allowed, but not the signer's)", 0x02, "signer used"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			patched := bytes.Clone(der)
			i := bytes.Index(patched, sha256OID) // the first is in digestAlgorithms
			patched[i+len(sha256OID)-1] = c.lastOID
			_, err := cms.ParseSignedData(patched)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "digestAlgorithms")
			assert.Contains(t, err.Error(), c.mention)
		})
	}
	_, err = cms.ParseSignedData(der)
	assert.NoError(t, err, "the untouched message still parses")
}

// TestVersionsMustFollowRFC5652: the SignedData and SignerInfo versions are unsigned;
// any value but the one the structure requires is refused.
func TestVersionsMustFollowRFC5652(t *testing.T) {
	f := getFixture(t)
	proto := cms.ProtocolContentType(7)
	byIssuer, err := cms.Sign([]byte("m"), cms.SignOptions{ContentType: proto, Signer: f.p256.key, Certificate: f.p256.cert, SigningTime: testNow})
	require.NoError(t, err)
	bySKI, err := cms.Sign([]byte("m"), cms.SignOptions{Signer: f.p256.key, Certificate: f.p256.cert, SigningTime: testNow, SubjectKeyID: true})
	require.NoError(t, err)
	// nthVersion walks the DER to the value byte of the SignedData version (n=0) or
	// of the first SignerInfo's version (n=1).
	nthVersion := func(der []byte, n int) int {
		in := cryptobyte.String(der)
		var ci, body, sd cryptobyte.String
		require.True(t, in.ReadASN1(&ci, cbasn1.SEQUENCE))
		require.True(t, ci.SkipASN1(cbasn1.OBJECT_IDENTIFIER))
		require.True(t, ci.ReadASN1(&body, cbasn1.Tag(0).Constructed().ContextSpecific()))
		require.True(t, body.ReadASN1(&sd, cbasn1.SEQUENCE))
		if n == 0 {
			return len(der) - len(sd) + 2 // after the INTEGER's tag and length
		}
		require.True(t, sd.SkipASN1(cbasn1.INTEGER))
		require.True(t, sd.SkipASN1(cbasn1.SET))
		require.True(t, sd.SkipASN1(cbasn1.SEQUENCE))
		require.True(t, sd.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()))
		require.True(t, sd.SkipOptionalASN1(cbasn1.Tag(1).Constructed().ContextSpecific()))
		var sis, si cryptobyte.String
		require.True(t, sd.ReadASN1(&sis, cbasn1.SET))
		require.True(t, sis.ReadASN1(&si, cbasn1.SEQUENCE))
		return len(der) - len(sd) - len(sis) - len(si) + 2 - 0
	}
	cases := []struct {
		name  string
		der   []byte
		which int
		to    byte
	}{
		{"SignedData 3 to 1 with a protocol content type", byIssuer, 0, 1},
		{"SignedData 3 to 2", byIssuer, 0, 2},
		{"SignedData 3 to 4", byIssuer, 0, 4},
		{"SignerInfo 3 to 1 with a key-identifier signer", bySKI, 1, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := cms.ParseSignedData(c.der)
			require.NoError(t, err, "the untouched message parses")
			patched := bytes.Clone(c.der)
			at := nthVersion(patched, c.which)
			require.Equal(t, byte(3), patched[at], "expected version 3 at the patched position")
			patched[at] = c.to
			_, err = cms.ParseSignedData(patched)
			require.Error(t, err)
			assert.Contains(t, err.Error(), "version")
		})
	}
}
