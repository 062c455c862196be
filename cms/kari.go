package cms

import (
	"context"
	"crypto"
	"crypto/aes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Key agreement (RFC 5753): ephemeral-static ECDH, X9.63 KDF, AES key wrap.
const (
	oidECDHStdSHA256KDF = "\x2b\x81\x04\x01\x0b\x01"             // 1.3.132.1.11.1 dhSinglePass-stdDH-sha256kdf-scheme
	oidECDHStdSHA384KDF = "\x2b\x81\x04\x01\x0b\x02"             // 1.3.132.1.11.2
	oidECDHStdSHA512KDF = "\x2b\x81\x04\x01\x0b\x03"             // 1.3.132.1.11.3
	oidAES256Wrap       = "\x60\x86\x48\x01\x65\x03\x04\x01\x2d" // 2.16.840.1.101.3.4.1.45
)

// KeyAgreer is an EC key-exchange private key, typically held in a token:
// it derives the raw ECDH shared secret with a peer's public key.
type KeyAgreer interface {
	Public() crypto.PublicKey
	ECDH(ctx context.Context, peer *ecdh.PublicKey) ([]byte, error)
}

// kariRecipient carries what decryption needs for one RecipientEncryptedKey.
type kariRecipient struct {
	originator []byte // uncompressed ephemeral public point
	ukm        []byte
	kdfHash    crypto.Hash
}

// encodeKARI returns a RecipientInfo [1] KeyAgreeRecipientInfo wrapping cek
// for an EC recipient with dhSinglePass-stdDH-sha256kdf-scheme and AES-256 wrap.
func encodeKARI(rc *x509.Certificate, pub *ecdsa.PublicKey, cek []byte) ([]byte, error) {
	peer, err := pub.ECDH()
	if err != nil {
		return nil, fmt.Errorf("recipient key: %w", err)
	}
	eph, err := peer.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ephemeral key: %w", err)
	}
	z, err := eph.ECDH(peer)
	if err != nil {
		return nil, fmt.Errorf("ECDH: %w", err)
	}
	kek, err := x963KDF(crypto.SHA256, z, nil)
	if err != nil {
		return nil, err
	}
	wrapped, err := aesKeyWrap(kek, cek)
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddASN1(tagCtx1Cons, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(3)
		b.AddASN1(tagCtx0Cons, func(b *cryptobyte.Builder) { // originator
			b.AddASN1(tagCtx1Cons, func(b *cryptobyte.Builder) { // originatorKey
				addAlgID(b, oidECPublicKey, nil)
				b.AddASN1BitString(eph.PublicKey().Bytes())
			})
		})
		addAlgID(b, oidECDHStdSHA256KDF, func(b *cryptobyte.Builder) { addAlgID(b, oidAES256Wrap, nil) })
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				addIssuerAndSerial(b, rc.RawIssuer, rc.SerialNumber)
				b.AddASN1OctetString(wrapped)
			})
		})
	})
	return b.Bytes()
}

// parseKARI reads a KeyAgreeRecipientInfo (the [1] element's contents) and
// returns one Recipient per RecipientEncryptedKey.
func parseKARI(s cryptobyte.String, limit int) ([]Recipient, error) {
	var version int64
	var orig, origChoice, ukmExplicit, reks cryptobyte.String
	var hasUKM bool
	if !s.ReadASN1Integer(&version) || version != 3 || !s.ReadASN1(&orig, tagCtx0Cons) ||
		!s.ReadOptionalASN1(&ukmExplicit, &hasUKM, tagCtx1Cons) {
		return nil, malformed("KeyAgreeRecipientInfo")
	}
	var kr kariRecipient
	var unsupported error
	if !orig.PeekASN1Tag(tagCtx1Cons) {
		unsupported = errors.New("cms: key agreement with a static originator key is not supported")
	} else {
		var keyAlg string
		var keyParams cryptobyte.String
		if !orig.ReadASN1(&origChoice, tagCtx1Cons) || !orig.Empty() ||
			!readAlgID(&origChoice, &keyAlg, &keyParams) || !origChoice.ReadASN1BitStringAsBytes(&kr.originator) || !origChoice.Empty() {
			return nil, malformed("originatorKey")
		}
		if keyAlg != oidECPublicKey {
			unsupported = fmt.Errorf("cms: originator key algorithm %s not supported", oidString(keyAlg))
		}
	}
	if hasUKM && (!ukmExplicit.ReadASN1Bytes(&kr.ukm, cbasn1.OCTET_STRING) || !ukmExplicit.Empty()) {
		return nil, malformed("ukm")
	}
	var kaOID, wrapOID string
	var kaParams, wrapParams cryptobyte.String
	if !readAlgID(&s, &kaOID, &kaParams) || !s.ReadASN1(&reks, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, malformed("KeyAgreeRecipientInfo")
	}
	switch kaOID {
	case oidECDHStdSHA256KDF:
		kr.kdfHash = crypto.SHA256
	case oidECDHStdSHA384KDF:
		kr.kdfHash = crypto.SHA384
	case oidECDHStdSHA512KDF:
		kr.kdfHash = crypto.SHA512
	default:
		if unsupported == nil {
			unsupported = fmt.Errorf("cms: key agreement algorithm %s not supported", oidString(kaOID))
		}
	}
	if kr.kdfHash != 0 && (!readAlgID(&kaParams, &wrapOID, &wrapParams) || !kaParams.Empty()) {
		return nil, malformed("key wrap algorithm")
	}
	if kr.kdfHash != 0 && wrapOID != oidAES256Wrap && unsupported == nil {
		unsupported = fmt.Errorf("cms: key wrap algorithm %s not supported", oidString(wrapOID))
	}
	var out []Recipient
	for !reks.Empty() {
		if len(out) >= limit {
			return nil, fmt.Errorf("cms: more than %d recipients", limit)
		}
		var rek cryptobyte.String
		if !reks.ReadASN1(&rek, cbasn1.SEQUENCE) {
			return nil, malformed("RecipientEncryptedKey")
		}
		// KeyAgreeRecipientIdentifier: issuerAndSerialNumber or [0] RecipientKeyIdentifier.
		var r Recipient
		if rek.PeekASN1Tag(tagCtx0Cons) {
			var rkid cryptobyte.String
			var ski []byte
			if !rek.ReadASN1(&rkid, tagCtx0Cons) || !rkid.ReadASN1Bytes(&ski, cbasn1.OCTET_STRING) || len(ski) == 0 {
				return nil, malformed("RecipientKeyIdentifier")
			}
			r.id.ski = ski // optional date and other fields are ignored
		} else {
			var err error
			if r.id, err = readSignerID(&rek); err != nil {
				return nil, err
			}
		}
		if !rek.ReadASN1Bytes(&r.encryptedKey, cbasn1.OCTET_STRING) || !rek.Empty() {
			return nil, malformed("RecipientEncryptedKey")
		}
		r.Issuer, r.SerialNumber, r.SubjectKeyID = r.id.issuer, r.id.serial, r.id.ski
		r.KeyEncryption = mustOIDLenient(kaOID)
		r.Unsupported = unsupported
		k := kr
		r.kari = &k
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("cms: KeyAgreeRecipientInfo has no recipients")
	}
	return out, nil
}

// x963KDF derives the 32-byte key-encryption key of RFC 5753 §7.2 with
// ECC-CMS-SharedInfo for AES-256 wrap.
func x963KDF(h crypto.Hash, z, ukm []byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		addAlgID(b, oidAES256Wrap, nil)
		if ukm != nil {
			b.AddASN1(tagCtx0Cons, func(b *cryptobyte.Builder) { b.AddASN1OctetString(ukm) })
		}
		b.AddASN1(tagCtx2Cons, func(b *cryptobyte.Builder) {
			b.AddASN1OctetString(binary.BigEndian.AppendUint32(nil, cekSize*8))
		})
	})
	sharedInfo, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("cms: encoding ECC-CMS-SharedInfo: %w", err)
	}
	hh := h.New()
	hh.Write(z)
	hh.Write([]byte{0, 0, 0, 1}) // counter; one block suffices for 32 bytes
	hh.Write(sharedInfo)
	return hh.Sum(nil)[:cekSize], nil
}

var keyWrapIV = []byte{0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6, 0xa6}

// aesKeyWrap implements RFC 3394.
func aesKeyWrap(kek, key []byte) ([]byte, error) {
	if len(key)%8 != 0 || len(key) < 16 {
		return nil, errors.New("cms: key wrap input must be a multiple of 8 bytes, at least 16")
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("cms: %w", err)
	}
	n := len(key) / 8
	out := make([]byte, 8+len(key))
	copy(out, keyWrapIV)
	copy(out[8:], key)
	var buf [16]byte
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			copy(buf[:8], out[:8])
			copy(buf[8:], out[8*i:8*i+8])
			block.Encrypt(buf[:], buf[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(out[:8], binary.BigEndian.Uint64(buf[:8])^t)
			copy(out[8*i:], buf[8:])
		}
	}
	return out, nil
}

// aesKeyUnwrap implements RFC 3394 unwrapping with a constant-time IV check.
func aesKeyUnwrap(kek, wrapped []byte) ([]byte, error) {
	if len(wrapped)%8 != 0 || len(wrapped) < 24 {
		return nil, errors.New("cms: wrapped key length invalid")
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("cms: %w", err)
	}
	n := len(wrapped)/8 - 1
	a := make([]byte, 8)
	copy(a, wrapped[:8])
	r := make([]byte, 8*n)
	copy(r, wrapped[8:])
	var buf [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(buf[:8], binary.BigEndian.Uint64(a)^t)
			copy(buf[8:], r[8*(i-1):8*i])
			block.Decrypt(buf[:], buf[:])
			copy(a, buf[:8])
			copy(r[8*(i-1):], buf[8:])
		}
	}
	if subtle.ConstantTimeCompare(a, keyWrapIV) != 1 {
		return nil, errors.New("key wrap integrity check failed")
	}
	return r, nil
}

// DecryptAgree decrypts for an EC recipient whose key agrees through key
// (RFC 5753 ephemeral-static ECDH, X9.63 KDF, AES-256 key wrap).
func (e *Envelope) DecryptAgree(ctx context.Context, cert *x509.Certificate, key KeyAgreer) ([]byte, error) {
	if cert == nil || key == nil {
		return nil, errors.New("cms: DecryptAgree needs a certificate and a key")
	}
	r, err := e.Recipient(cert)
	if err != nil {
		return nil, err
	}
	if err := e.checkPolicy(); err != nil {
		return nil, err
	}
	if r.Unsupported != nil {
		return nil, r.Unsupported
	}
	if r.kari == nil {
		return nil, errors.New("cms: the RecipientInfo for this certificate is key transport; use Decrypt")
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("cms: key agreement recipient has a %T key, want ECDSA", cert.PublicKey)
	}
	if eq, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(cert.PublicKey) {
		return nil, errors.New("cms: key agreement key does not match the recipient certificate")
	}
	static, err := pub.ECDH()
	if err != nil {
		return nil, fmt.Errorf("cms: recipient key: %w", err)
	}
	peer, err := static.Curve().NewPublicKey(r.kari.originator)
	if err != nil {
		return nil, fmt.Errorf("cms: originator public key: %w", err)
	}
	z, err := key.ECDH(ctx, peer)
	if err != nil {
		return nil, fmt.Errorf("cms: ECDH: %w", err)
	}
	kek, err := x963KDF(r.kari.kdfHash, z, r.kari.ukm)
	if err != nil {
		return nil, err
	}
	cek, uerr := aesKeyUnwrap(kek, r.encryptedKey)
	return e.openWith(cek, uerr)
}

// DecryptAgree parses der and decrypts it for an EC key-agreement recipient.
func DecryptAgree(ctx context.Context, der []byte, cert *x509.Certificate, key KeyAgreer) ([]byte, x509.OID, error) {
	env, err := ParseEnvelope(der)
	if err != nil {
		return nil, x509.OID{}, err
	}
	out, err := env.DecryptAgree(ctx, cert, key)
	if err != nil {
		return nil, x509.OID{}, err
	}
	return out, env.ContentType(), nil
}
