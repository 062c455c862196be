package cms_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"io"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/cms"
)

func mustEncrypt(t testing.TB, opts cms.EncryptOptions) []byte {
	t.Helper()
	der, err := cms.Encrypt(message, opts)
	require.NoError(t, err)
	return der
}

func TestEncryptDecryptRoundTrip(t *testing.T) {
	f := getFixture(t)
	for _, c := range []cms.Cipher{cms.AES256GCM} {
		for _, h := range []crypto.Hash{0, crypto.SHA1, crypto.SHA256, crypto.SHA384} {
			for _, content := range [][]byte{{}, message, bytes.Repeat([]byte{7}, 4096)} {
				t.Run(c.String()+"/"+h.String(), func(t *testing.T) {
					ct := cms.ProtocolContentType(3)
					der, err := cms.Encrypt(content, cms.EncryptOptions{
						Recipients:  []*x509.Certificate{f.rsa2.cert, f.rsa.cert},
						ContentType: ct, Cipher: c, OAEPHash: h,
					})
					require.NoError(t, err)

					env, err := cms.ParseEnvelope(der)
					require.NoError(t, err)
					assert.Equal(t, c, env.Cipher)
					require.Len(t, env.Recipients, 2)
					r, err := env.Recipient(f.rsa.cert)
					require.NoError(t, err)
					wantHash := h
					if wantHash == 0 {
						wantHash = crypto.SHA1
					}
					assert.Equal(t, wantHash, r.OAEPHash)
					assert.Equal(t, wantHash, r.MGFHash)
					assert.NoError(t, r.Unsupported)

					for _, p := range []party{f.rsa, f.rsa2} {
						got, gotCT, err := cms.Decrypt(der, p.cert, p.decrypter())
						require.NoError(t, err)
						assert.Equal(t, content, got)
						assert.True(t, gotCT.Equal(ct))
					}
				})
			}
		}
	}
}

func TestEncryptOptionErrors(t *testing.T) {
	f := getFixture(t)
	tests := []struct {
		name string
		opts cms.EncryptOptions
		want string
	}{
		{"no recipients", cms.EncryptOptions{}, "at least one recipient"},
		{"nil recipient", cms.EncryptOptions{Recipients: []*x509.Certificate{nil}}, "is nil"},
		{"MD5 OAEP", cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, OAEPHash: crypto.MD5}, "OAEP hash"},
		{"bad cipher", cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, Cipher: cms.Cipher(9)}, "unknown cipher"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cms.Encrypt(message, tc.opts)
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

func TestDecryptRejects(t *testing.T) {
	f := getFixture(t)
	long := bytes.Repeat([]byte("0123456789abcdef"), 4)
	enc := func(c cms.Cipher) []byte {
		der, err := cms.Encrypt(long, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, Cipher: c})
		require.NoError(t, err)
		return der
	}
	gcm, cbc := enc(cms.AES256GCM), enc(cms.AES256CBC)

	flip := func(der []byte, fromEnd int) []byte {
		out := bytes.Clone(der)
		out[len(out)-fromEnd] ^= 0xff
		return out
	}
	aes256CBC := []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a}
	aes256GCM := []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2e}
	aes128CBC := []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x02}

	tests := []struct {
		name  string
		der   []byte
		who   party
		want  string
		isErr error
	}{
		{name: "wrong recipient", der: gcm, who: f.rsa2, isErr: cms.ErrNoRecipient},
		{name: "tampered GCM tag", der: flip(gcm, 1), who: f.rsa, want: "content decryption failed"},
		{name: "tampered GCM ciphertext", der: flip(gcm, 20), who: f.rsa, want: "content decryption failed"},
		{name: "CBC", der: cbc, who: f.rsa, isErr: cms.ErrNotAuthenticated},
		// Flipping the last byte of the next-to-last block flips the padding byte.
		{name: "tampered CBC padding", der: flip(cbc, 17), who: f.rsa, isErr: cms.ErrNotAuthenticated},
		{name: "GCM inside EnvelopedData", der: mutate(t, cbc, aes256CBC, aes256GCM), who: f.rsa, want: "belongs in AuthEnvelopedData"},
		{name: "AES-128", der: mutate(t, cbc, aes256CBC, aes128CBC), who: f.rsa, want: "not supported"},
		{name: "truncated", der: gcm[:len(gcm)-1], who: f.rsa, want: "malformed"},
		{name: "garbage", der: []byte{0x30, 0x03, 0x02, 0x01, 0x00}, who: f.rsa, want: "malformed"},
		{name: "SignedData", der: mustSign(t, f.p256), who: f.rsa, want: "want EnvelopedData"},
		{name: "key mismatch", der: gcm, who: party{f.rsa.cert, f.rsa2.key}, want: "does not match"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := cms.Decrypt(tc.der, tc.who.cert, tc.who.decrypter())
			require.Error(t, err)
			if tc.isErr != nil {
				assert.True(t, errors.Is(err, tc.isErr), "got %v", err)
			}
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

// Finding 1 (padding oracle): every consumer gets the one cipher policy from
// Decrypt itself. Unauthenticated AES-CBC is refused before the key is used, so a
// broken padding byte and a broken earlier block cannot be told apart (neither
// is ever decrypted).
func TestDecryptRefusesCBCBeforeKeyUse(t *testing.T) {
	f := getFixture(t)
	long := bytes.Repeat([]byte("0123456789abcdef"), 4)
	cbc, err := cms.Encrypt(long, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, Cipher: cms.AES256CBC})
	require.NoError(t, err)
	padding, earlier := bytes.Clone(cbc), bytes.Clone(cbc)
	padding[len(padding)-17] ^= 0x01 // last byte of the next-to-last block: the padding byte
	earlier[len(earlier)-40] ^= 0x01 // a byte two blocks earlier: garbles the plaintext only
	var texts []string
	for _, der := range [][]byte{cbc, padding, earlier} {
		d := &countingDecrypter{Decrypter: f.rsa.decrypter()}
		_, _, err := cms.Decrypt(der, f.rsa.cert, d)
		require.Error(t, err)
		assert.ErrorIs(t, err, cms.ErrNotAuthenticated)
		assert.Zero(t, d.calls, "the key is not used for an unauthenticated envelope")
		texts = append(texts, err.Error())
	}
	assert.Equal(t, texts[0], texts[1])
	assert.Equal(t, texts[1], texts[2])
}

// Finding 1: every failure after a RecipientInfo is found looks the same: a
// key-transport unwrap that fails (bad OAEP), a token that refuses, a key of the
// wrong size, a tampered tag, ciphertext or nonce. Same error, same text, same
// code path (a random content key stands in for one that did not unwrap).
func TestDecryptFailuresLookAlike(t *testing.T) {
	f := getFixture(t)
	ct := cms.ProtocolContentType(3)
	der, err := cms.Encrypt(message, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, ContentType: ct})
	require.NoError(t, err)
	flipAt := func(i int) []byte { out := bytes.Clone(der); out[i] ^= 0x01; return out }
	ek := bytes.Index(der, []byte{0x04, 0x82, 0x01, 0x00}) // encryptedKey: OCTET STRING of 256 bytes
	require.Positive(t, ek)
	nonce := bytes.Index(der, []byte{0x30, 0x11, 0x04, 0x0c}) // GCMParameters: nonce of 12 bytes
	require.Positive(t, nonce)
	// authAttrs ([1] SEQUENCE{contentType ...}) follow the ciphertext.
	attrs := bytes.LastIndex(der, append([]byte{0x06, 0x09}, oidContentTypeAttr...)) - 4
	require.Equal(t, byte(0xa1), der[attrs])

	tests := []struct {
		name string
		der  []byte
		key  crypto.Decrypter
	}{
		{"OAEP padding broken", flipAt(ek + 4 + 128), f.rsa.decrypter()},
		{"token refuses", der, failingDecrypter{f.rsa.decrypter(), errors.New("CKR_ENCRYPTED_DATA_INVALID")}},
		{"content key of the wrong size", der, shortKeyDecrypter{f.rsa.decrypter()}},
		{"tag", flipAt(len(der) - 1), f.rsa.decrypter()},
		{"ciphertext", flipAt(attrs - 1), f.rsa.decrypter()},
		{"nonce", flipAt(nonce + 4), f.rsa.decrypter()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := cms.Decrypt(tc.der, f.rsa.cert, tc.key)
			require.Error(t, err)
			assert.ErrorIs(t, err, cms.ErrDecrypt)
			assert.Equal(t, cms.ErrDecrypt.Error(), err.Error())
		})
	}
}

// Finding 5: the content type of an AuthEnvelopedData is bound by authAttrs
// (RFC 5083): relabelled envelopes are refused when parsed, before any key
// operation, and stripping the attributes breaks the GCM tag.
func TestContentTypeIsAuthenticated(t *testing.T) {
	f := getFixture(t)
	ct3, ct4 := cms.ProtocolContentType(3), cms.ProtocolContentType(4)
	typed, err := cms.Encrypt(message, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, ContentType: ct3})
	require.NoError(t, err)
	data, err := cms.Encrypt(message, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}})
	require.NoError(t, err)
	got, gotCT, err := cms.Decrypt(typed, f.rsa.cert, f.rsa.decrypter())
	require.NoError(t, err)
	assert.Equal(t, message, got)
	assert.True(t, gotCT.Equal(ct3))

	refusedAtParse := []struct {
		name string
		der  []byte
	}{
		{"typed relabelled to another type", relabel(t, typed, ct4, keepAttrs)},
		{"typed relabelled to id-data", relabel(t, typed, cms.DataContentType(), keepAttrs)},
		{"id-data relabelled to a type (no authAttrs)", relabel(t, data, ct3, keepAttrs)},
		{"typed without authAttrs", relabel(t, typed, ct3, dropAttrs)},
		{"content-type attribute missing", relabel(t, typed, ct3, otherAttrOnly)},
		{"content-type attribute twice", relabel(t, typed, ct3, duplicateAttr)},
	}
	for _, tc := range refusedAtParse {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cms.ParseEnvelope(tc.der)
			assert.ErrorIs(t, err, cms.ErrContentTypeNotBound)
			d := &countingDecrypter{Decrypter: f.rsa.decrypter()}
			_, _, err = cms.Decrypt(tc.der, f.rsa.cert, d)
			assert.Error(t, err)
			assert.Zero(t, d.calls, "refused before any key operation")
		})
	}
	t.Run("authAttrs stripped and relabelled to id-data", func(t *testing.T) {
		_, _, err := cms.Decrypt(relabel(t, typed, cms.DataContentType(), dropAttrs), f.rsa.cert, f.rsa.decrypter())
		assert.ErrorIs(t, err, cms.ErrDecrypt, "the tag covers the attributes")
	})
	t.Run("consistently relabelled attributes and type", func(t *testing.T) {
		_, _, err := cms.Decrypt(relabel(t, typed, ct4, retypeAttrs(ct4)), f.rsa.cert, f.rsa.decrypter())
		assert.ErrorIs(t, err, cms.ErrDecrypt, "the tag covers the attributes")
	})
}

type countingDecrypter struct {
	crypto.Decrypter
	calls int
}

func (d *countingDecrypter) Decrypt(r io.Reader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	d.calls++
	return d.Decrypter.Decrypt(r, msg, opts)
}

type failingDecrypter struct {
	crypto.Decrypter
	err error
}

func (d failingDecrypter) Decrypt(io.Reader, []byte, crypto.DecrypterOpts) ([]byte, error) {
	return nil, d.err
}

type shortKeyDecrypter struct{ crypto.Decrypter }

func (d shortKeyDecrypter) Decrypt(r io.Reader, msg []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	k, err := d.Decrypter.Decrypt(r, msg, opts)
	if err != nil {
		return nil, err
	}
	return k[:16], nil
}

var oidContentTypeAttr = []byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x03}

func attrsDER(attrs ...[]byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.Tag(1).ContextSpecific().Constructed(), func(b *cryptobyte.Builder) {
		for _, a := range attrs {
			b.AddBytes(a)
		}
	})
	return b.BytesOrPanic()
}

func attr(typ []byte, values ...[]byte) []byte {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(typ) })
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
			for _, v := range values {
				b.AddBytes(v)
			}
		})
	})
	return b.BytesOrPanic()
}

func oidElem(t *testing.T, o x509.OID) []byte {
	t.Helper()
	der, err := o.MarshalBinary()
	require.NoError(t, err)
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(der) })
	return b.BytesOrPanic()
}

// Ways relabel treats the authAttrs element (nil: absent).
func keepAttrs(old []byte) []byte { return old }
func dropAttrs([]byte) []byte     { return nil }
func otherAttrOnly([]byte) []byte {
	return attrsDER(attr([]byte{0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x05}, []byte{0x17, 0x01, 0x30}))
}
func duplicateAttr(old []byte) []byte {
	s := cryptobyte.String(old)
	var set cryptobyte.String
	if !s.ReadASN1(&set, cbasn1.Tag(1).ContextSpecific().Constructed()) {
		return old
	}
	return attrsDER(set, set)
}
func retypeAttrs(ct x509.OID) func([]byte) []byte {
	return func([]byte) []byte {
		der, _ := ct.MarshalBinary()
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes(der) })
		return attrsDER(attr(oidContentTypeAttr, b.BytesOrPanic()))
	}
}

// relabel rewrites an AuthEnvelopedData's EncryptedContentInfo content type to
// ct and its authAttrs with attrs, keeping everything else byte for byte.
func relabel(t *testing.T, der []byte, ct x509.OID, attrs func([]byte) []byte) []byte {
	t.Helper()
	in := cryptobyte.String(der)
	var ci, oid, explicit, aed cryptobyte.String
	ctx0 := cbasn1.Tag(0).ContextSpecific().Constructed()
	ctx1 := cbasn1.Tag(1).ContextSpecific().Constructed()
	require.True(t, in.ReadASN1(&ci, cbasn1.SEQUENCE) && ci.ReadASN1Element(&oid, cbasn1.OBJECT_IDENTIFIER) &&
		ci.ReadASN1(&explicit, ctx0) && explicit.ReadASN1(&aed, cbasn1.SEQUENCE))
	var version, ris, eci, oldAttrs, mac cryptobyte.String
	require.True(t, aed.ReadASN1Element(&version, cbasn1.INTEGER) && aed.ReadASN1Element(&ris, cbasn1.SET) &&
		aed.ReadASN1Element(&eci, cbasn1.SEQUENCE))
	if aed.PeekASN1Tag(ctx1) {
		require.True(t, aed.ReadASN1Element(&oldAttrs, ctx1))
	}
	require.True(t, aed.ReadASN1Element(&mac, cbasn1.OCTET_STRING) && aed.Empty())
	var eciBody, oldCT cryptobyte.String
	require.True(t, eci.ReadASN1(&eciBody, cbasn1.SEQUENCE) && eciBody.ReadASN1(&oldCT, cbasn1.OBJECT_IDENTIFIER))
	var old []byte
	if len(oldAttrs) > 0 {
		old = oldAttrs
	}
	newAttrs := attrs(old)
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(oid)
		b.AddASN1(ctx0, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddBytes(version)
				b.AddBytes(ris)
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddBytes(oidElem(t, ct))
					b.AddBytes(eciBody)
				})
				b.AddBytes(newAttrs)
				b.AddBytes(mac)
			})
		})
	})
	return b.BytesOrPanic()
}

func TestEnvelopeTruncations(t *testing.T) {
	f := getFixture(t)
	for _, c := range []cms.Cipher{cms.AES256CBC, cms.AES256GCM} {
		der := mustEncrypt(t, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, Cipher: c})
		for n := 0; n < len(der); n++ {
			_, err := cms.ParseEnvelope(der[:n])
			require.Error(t, err, "truncated to %d bytes", n)
		}
	}
}

func TestEnvelopeLimits(t *testing.T) {
	f := getFixture(t)
	der := mustEncrypt(t, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert, f.rsa2.cert}})
	_, err := cms.Limits{MaxRecipients: 1}.ParseEnvelope(der)
	assert.ErrorContains(t, err, "more than 1 recipients")
	_, err = cms.Limits{MaxSize: 100}.ParseEnvelope(der)
	assert.ErrorContains(t, err, "exceeds the limit")
}

func mustSign(t testing.TB, p party) []byte {
	t.Helper()
	der, err := cms.Sign(message, cms.SignOptions{Signer: p.key, Certificate: p.cert, SigningTime: testNow})
	require.NoError(t, err)
	return der
}
