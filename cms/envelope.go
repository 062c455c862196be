package cms

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Cipher selects the content encryption and with it the envelope form.
type Cipher int

const (
	// AES256GCM writes an AuthEnvelopedData (RFC 5083/5084): 12-byte
	// nonce, 16-byte tag in the mac field. It is the zero value.
	AES256GCM Cipher = iota
	// AES256CBC writes an EnvelopedData, for peers without AuthEnvelopedData.
	// This package never decrypts one (ErrNotAuthenticated): CBC has no
	// integrity, and its decryption is a padding oracle.
	AES256CBC
)

func (c Cipher) String() string {
	switch c {
	case AES256GCM:
		return "AES-256-GCM"
	case AES256CBC:
		return "AES-256-CBC"
	}
	return fmt.Sprintf("Cipher(%d)", int(c))
}

const (
	cekSize   = 32 // AES-256
	gcmNonce  = 12
	gcmTagLen = 16
)

// EncryptOptions configures Encrypt.
type EncryptOptions struct {
	// Recipients are RSA key-exchange certificates; each gets a
	// KeyTransRecipientInfo identified by issuerAndSerialNumber.
	Recipients []*x509.Certificate
	// ContentType of the encrypted content; the zero OID means id-data.
	ContentType x509.OID
	// Cipher defaults to AES256GCM (AuthEnvelopedData).
	Cipher Cipher
	// OAEPHash is the RSAES-OAEP hash and MGF1 hash. Zero means SHA-1,
	// because SoftHSM 2.6.1 only unwraps with OAEP-SHA-1; SHA-256 (and
	// SHA-384/512) are allowed for tokens that support them.
	OAEPHash crypto.Hash
}

// Encrypt returns a DER ContentInfo holding an EnvelopedData (AES256CBC) or
// AuthEnvelopedData (AES256GCM) of content for opts.Recipients.
func Encrypt(content []byte, opts EncryptOptions) ([]byte, error) {
	if len(opts.Recipients) == 0 {
		return nil, errors.New("cms: Encrypt needs at least one recipient")
	}
	ct, err := oidDER(opts.ContentType, oidData)
	if err != nil {
		return nil, err
	}
	oaepHash := opts.OAEPHash
	if oaepHash == 0 {
		oaepHash = crypto.SHA1
	}
	hOID, ok := hashOID(oaepHash)
	if !ok || !oaepHash.Available() {
		return nil, fmt.Errorf("cms: OAEP hash %v not supported", oaepHash)
	}
	cek := make([]byte, cekSize)
	if _, err := rand.Read(cek); err != nil {
		return nil, fmt.Errorf("cms: generating content key: %w", err)
	}
	ris := make([][]byte, 0, len(opts.Recipients))
	hasKARI := false
	for i, rc := range opts.Recipients {
		if rc == nil {
			return nil, fmt.Errorf("cms: recipient %d is nil", i)
		}
		if ecPub, ok := rc.PublicKey.(*ecdsa.PublicKey); ok {
			ri, err := encodeKARI(rc, ecPub, cek)
			if err != nil {
				return nil, fmt.Errorf("cms: recipient %d (%s): %w", i, rc.Subject, err)
			}
			ris = append(ris, ri)
			hasKARI = true
			continue
		}
		pub, ok := rc.PublicKey.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("cms: recipient %d (%s): key type %T not supported", i, rc.Subject, rc.PublicKey)
		}
		ek, err := rsa.EncryptOAEP(oaepHash.New(), rand.Reader, pub, cek, nil)
		if err != nil {
			return nil, fmt.Errorf("cms: recipient %d (%s): wrapping content key: %w", i, rc.Subject, err)
		}
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(0) // version 0: issuerAndSerialNumber
			addIssuerAndSerial(b, rc.RawIssuer, rc.SerialNumber)
			addAlgID(b, oidRSAESOAEP, func(b *cryptobyte.Builder) { addOAEPParams(b, oaepHash, hOID) })
			b.AddASN1OctetString(ek)
		})
		ri, err := b.Bytes()
		if err != nil {
			return nil, fmt.Errorf("cms: encoding RecipientInfo: %w", err)
		}
		ris = append(ris, ri)
	}

	var b cryptobyte.Builder
	switch opts.Cipher {
	case AES256CBC:
		iv := make([]byte, aes.BlockSize)
		if _, err := rand.Read(iv); err != nil {
			return nil, fmt.Errorf("cms: generating IV: %w", err)
		}
		block, _ := aes.NewCipher(cek) // cannot fail: cek is 32 bytes
		pad := aes.BlockSize - len(content)%aes.BlockSize
		buf := make([]byte, len(content)+pad)
		copy(buf, content)
		for i := len(content); i < len(buf); i++ {
			buf[i] = byte(pad)
		}
		cipher.NewCBCEncrypter(block, iv).CryptBlocks(buf, buf)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addOID(b, oidEnvelopedData)
			b.AddASN1(tagCtx0Cons, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					// RFC 5652 §6.1: 0 with only version-0 KeyTransRecipientInfos, 2 with key agreement.
					if hasKARI {
						b.AddASN1Int64(2)
					} else {
						b.AddASN1Int64(0)
					}
					addSetOf(b, cbasn1.SET, ris)
					addEncryptedContentInfo(b, ct, oidAES256CBC, func(b *cryptobyte.Builder) { b.AddASN1OctetString(iv) }, buf)
				})
			})
		})
	case AES256GCM:
		nonce := make([]byte, gcmNonce)
		if _, err := rand.Read(nonce); err != nil {
			return nil, fmt.Errorf("cms: generating nonce: %w", err)
		}
		block, _ := aes.NewCipher(cek)
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("cms: %w", err)
		}
		// RFC 5083 §2.1: authAttrs (the content-type attribute) must be present
		// for any content type but id-data; their DER, as a SET, is the GCM AAD,
		// so the content type cannot be relabelled. id-data envelopes carry none,
		// which keeps them readable by OpenSSL 3.0 (it cannot parse authAttrs).
		var authAttrs, aad []byte
		if ct != oidData {
			authAttrs, err = encodeContentTypeAuthAttrs(ct)
			if err != nil {
				return nil, err
			}
			aad = setTagged(authAttrs)
		}
		sealed := aead.Seal(nil, nonce, content, aad)
		ciphertext, tag := sealed[:len(content)], sealed[len(content):]
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addOID(b, oidAuthEnvelopedData)
			b.AddASN1(tagCtx0Cons, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1Int64(0)
					addSetOf(b, cbasn1.SET, ris)
					addEncryptedContentInfo(b, ct, oidAES256GCM, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // GCMParameters
							b.AddASN1OctetString(nonce)
							b.AddASN1Int64(gcmTagLen) // not the DEFAULT 12, so it is encoded
						})
					}, ciphertext)
					if authAttrs != nil {
						b.AddBytes(authAttrs)
					}
					b.AddASN1OctetString(tag) // mac
				})
			})
		})
	default:
		return nil, fmt.Errorf("cms: unknown cipher %v", opts.Cipher)
	}
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("cms: encoding envelope: %w", err)
	}
	return out, nil
}

func addEncryptedContentInfo(b *cryptobyte.Builder, ct, alg string, params cryptobyte.BuilderContinuation, ciphertext []byte) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		addOID(b, ct)
		addAlgID(b, alg, params)
		b.AddASN1(tagCtx0Prim, func(b *cryptobyte.Builder) { b.AddBytes(ciphertext) })
	})
}

// addOAEPParams writes RSAES-OAEP-params as OpenSSL does: the empty
// all-default SEQUENCE for SHA-1, otherwise explicit hashFunc and
// maskGenFunc (MGF1 with the same hash) with absent hash parameters.
// OpenSSL falls back to MGF1-SHA-1 when maskGenFunc is missing, which is
// the bug this layout avoids.
func addOAEPParams(b *cryptobyte.Builder, h crypto.Hash, hOID string) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		if h == crypto.SHA1 {
			return
		}
		b.AddASN1(tagCtx0Cons, func(b *cryptobyte.Builder) { addHashAlgID(b, hOID, false) })
		b.AddASN1(tagCtx1Cons, func(b *cryptobyte.Builder) {
			addAlgID(b, oidMGF1, func(b *cryptobyte.Builder) { addHashAlgID(b, hOID, false) })
		})
	})
}

// Recipient describes one RecipientInfo of an envelope.
type Recipient struct {
	// Issuer (raw DER Name) and SerialNumber identify the recipient
	// certificate, or SubjectKeyID does.
	Issuer       []byte
	SerialNumber *big.Int
	SubjectKeyID []byte
	// KeyEncryption is the key encryption algorithm OID.
	KeyEncryption x509.OID
	// OAEPHash and MGFHash are the RSAES-OAEP parameters; both zero if the
	// algorithm is not RSAES-OAEP. Check them before handing the key to a
	// token that may lack the mechanism (SoftHSM 2.6.1: SHA-1 only).
	OAEPHash crypto.Hash
	MGFHash  crypto.Hash
	// Unsupported is non-nil when this RecipientInfo cannot be decrypted
	// by this package, and says why.
	Unsupported error

	id           issuerSerial
	encryptedKey []byte
	kari         *kariRecipient // nil for key transport
}

// Matches reports whether the RecipientInfo is addressed to cert.
func (r *Recipient) Matches(cert *x509.Certificate) bool {
	return cert != nil && r.id.matches(cert)
}

// Envelope is a parsed EnvelopedData or AuthEnvelopedData.
type Envelope struct {
	// Cipher is the content encryption in use.
	Cipher Cipher
	// Recipients lists the key transport RecipientInfos; other kinds
	// (key agreement, KEK, password) are listed with Unsupported set.
	Recipients []Recipient

	contentType string
	iv          []byte // CBC IV or GCM nonce
	ciphertext  []byte
	tag         []byte // GCM only
	aad         []byte // GCM only: DER of authAttrs as a SET, if any
}

// ContentType returns the type of the encrypted content.
func (e *Envelope) ContentType() x509.OID { return mustOIDLenient(e.contentType) }

// ParseEnvelope parses a DER ContentInfo(EnvelopedData or
// AuthEnvelopedData) with the default Limits.
func ParseEnvelope(der []byte) (*Envelope, error) { return Limits{}.ParseEnvelope(der) }

// ParseEnvelope parses a DER ContentInfo(EnvelopedData or AuthEnvelopedData)
// without decrypting it. Only AES-256-CBC in EnvelopedData and AES-256-GCM
// in AuthEnvelopedData are accepted.
func (l Limits) ParseEnvelope(der []byte) (*Envelope, error) {
	if err := l.checkSize(der); err != nil {
		return nil, err
	}
	s := cryptobyte.String(der)
	var ci cryptobyte.String
	var ct string
	if !s.ReadASN1(&ci, cbasn1.SEQUENCE) || !s.Empty() || !readOID(&ci, &ct) {
		return nil, malformed("ContentInfo")
	}
	auth := false
	switch ct {
	case oidEnvelopedData:
	case oidAuthEnvelopedData:
		auth = true
	default:
		return nil, fmt.Errorf("cms: ContentInfo holds %s, want EnvelopedData or AuthEnvelopedData", oidString(ct))
	}
	var body, ed, ris, eci cryptobyte.String
	var version int64
	if !ci.ReadASN1(&body, tagCtx0Cons) || !ci.Empty() || !body.ReadASN1(&ed, cbasn1.SEQUENCE) || !body.Empty() ||
		!ed.ReadASN1Integer(&version) || !skipOptional(&ed, tagCtx0Cons) /* originatorInfo */ ||
		!ed.ReadASN1(&ris, cbasn1.SET) || !ed.ReadASN1(&eci, cbasn1.SEQUENCE) {
		return nil, malformed("envelope")
	}
	if version < 0 || version > 4 {
		return nil, fmt.Errorf("cms: unsupported envelope version %d", version)
	}
	env := &Envelope{}
	for !ris.Empty() {
		if len(env.Recipients) >= l.maxRecipients() {
			return nil, fmt.Errorf("cms: more than %d recipients", l.maxRecipients())
		}
		rs, err := parseRecipientInfo(&ris, l.maxRecipients()-len(env.Recipients))
		if err != nil {
			return nil, err
		}
		env.Recipients = append(env.Recipients, rs...)
	}
	if len(env.Recipients) == 0 {
		return nil, errors.New("cms: envelope has no recipients")
	}
	var algOID string
	var params cryptobyte.String
	if !readOID(&eci, &env.contentType) || !readAlgID(&eci, &algOID, &params) {
		return nil, malformed("EncryptedContentInfo")
	}
	if eci.PeekASN1Tag(tagCtx0Cons) {
		return nil, errors.New("cms: encryptedContent in BER constructed form is not accepted")
	}
	var present bool
	var ciphertext cryptobyte.String
	if !eci.ReadOptionalASN1(&ciphertext, &present, tagCtx0Prim) || !eci.Empty() {
		return nil, malformed("encryptedContent")
	}
	if !present {
		return nil, errors.New("cms: detached encrypted content is not supported")
	}
	env.ciphertext = ciphertext

	switch {
	case algOID == oidAES256CBC && !auth:
		env.Cipher = AES256CBC
		if !params.ReadASN1Bytes(&env.iv, cbasn1.OCTET_STRING) || !params.Empty() || len(env.iv) != aes.BlockSize {
			return nil, errors.New("cms: AES-256-CBC parameters must be a 16-byte IV")
		}
		if len(env.ciphertext) == 0 || len(env.ciphertext)%aes.BlockSize != 0 {
			return nil, fmt.Errorf("cms: AES-256-CBC ciphertext length %d is not a positive multiple of 16", len(env.ciphertext))
		}
		if !skipOptional(&ed, tagCtx1Cons) || !ed.Empty() { // unprotectedAttrs
			return nil, malformed("EnvelopedData trailer")
		}
	case algOID == oidAES256GCM && auth:
		env.Cipher = AES256GCM
		var gp cryptobyte.String
		icv := int64(12)
		if !params.ReadASN1(&gp, cbasn1.SEQUENCE) || !params.Empty() ||
			!gp.ReadASN1Bytes(&env.iv, cbasn1.OCTET_STRING) ||
			(gp.PeekASN1Tag(cbasn1.INTEGER) && !gp.ReadASN1Integer(&icv)) || !gp.Empty() {
			return nil, malformed("GCMParameters")
		}
		if len(env.iv) != gcmNonce || icv != gcmTagLen {
			return nil, fmt.Errorf("cms: GCM nonce of %d bytes and tag of %d bytes not supported (want 12 and 16)", len(env.iv), icv)
		}
		var authAttrs cryptobyte.String
		if ed.PeekASN1Tag(tagCtx1Cons) {
			if !ed.ReadASN1Element(&authAttrs, tagCtx1Cons) {
				return nil, malformed("authAttrs")
			}
			if err := checkAuthAttrs(authAttrs, env.contentType); err != nil {
				return nil, err
			}
			env.aad = setTagged(authAttrs)
		} else if env.contentType != oidData {
			// Without authAttrs nothing authenticates the content type: such an
			// envelope could have been relabelled.
			return nil, fmt.Errorf("cms: AuthEnvelopedData of content type %s has no authenticated attributes (RFC 5083 §2.1): %w",
				oidString(env.contentType), ErrContentTypeNotBound)
		}
		if !ed.ReadASN1Bytes(&env.tag, cbasn1.OCTET_STRING) || !skipOptional(&ed, tagCtx2Cons) || !ed.Empty() {
			return nil, malformed("AuthEnvelopedData mac")
		}
		if len(env.tag) != gcmTagLen {
			return nil, fmt.Errorf("cms: GCM tag is %d bytes, want %d", len(env.tag), gcmTagLen)
		}
	case algOID == oidAES256GCM:
		return nil, errors.New("cms: AES-GCM inside EnvelopedData is not accepted; it belongs in AuthEnvelopedData")
	case algOID == oidAES256CBC:
		return nil, errors.New("cms: AES-CBC inside AuthEnvelopedData is not an authenticated cipher")
	default:
		return nil, fmt.Errorf("cms: content encryption algorithm %s not supported", oidString(algOID))
	}
	return env, nil
}

func parseRecipientInfo(s *cryptobyte.String, limit int) ([]Recipient, error) {
	var r Recipient
	var elem cryptobyte.String
	var tag cbasn1.Tag
	if !s.ReadAnyASN1Element(&elem, &tag) {
		return nil, malformed("RecipientInfo")
	}
	if tag == tagCtx1Cons {
		var kari cryptobyte.String
		if !elem.ReadASN1(&kari, tagCtx1Cons) {
			return nil, malformed("KeyAgreeRecipientInfo")
		}
		return parseKARI(kari, limit)
	}
	if tag != cbasn1.SEQUENCE {
		r.Unsupported = fmt.Errorf("cms: RecipientInfo choice [%d] (KEK, password or other) not supported", tag&0x1f)
		return []Recipient{r}, nil
	}
	var ktri cryptobyte.String
	var version int64
	if !elem.ReadASN1(&ktri, cbasn1.SEQUENCE) || !ktri.ReadASN1Integer(&version) {
		return nil, malformed("KeyTransRecipientInfo")
	}
	if version != 0 && version != 2 {
		return nil, fmt.Errorf("cms: unsupported KeyTransRecipientInfo version %d", version)
	}
	var err error
	if r.id, err = readSignerID(&ktri); err != nil {
		return nil, err
	}
	r.Issuer, r.SerialNumber, r.SubjectKeyID = r.id.issuer, r.id.serial, r.id.ski
	var alg string
	var params cryptobyte.String
	if !readAlgID(&ktri, &alg, &params) || !ktri.ReadASN1Bytes(&r.encryptedKey, cbasn1.OCTET_STRING) || !ktri.Empty() {
		return nil, malformed("KeyTransRecipientInfo")
	}
	r.KeyEncryption = mustOIDLenient(alg)
	switch alg {
	case oidRSAESOAEP:
		r.OAEPHash, r.MGFHash, err = parseOAEPParams(params)
		if err != nil {
			return nil, err
		}
	case oidRSAEncryption:
		r.Unsupported = errors.New("cms: RSA PKCS#1 v1.5 key transport is not accepted (padding-oracle prone); use RSAES-OAEP")
	default:
		r.Unsupported = fmt.Errorf("cms: key encryption algorithm %s not supported", oidString(alg))
	}
	return []Recipient{r}, nil
}

// parseOAEPParams reads RSAES-OAEP-params (RFC 4055); absent parameters
// and absent fields take the SHA-1 defaults.
func parseOAEPParams(p cryptobyte.String) (hash, mgfHash crypto.Hash, err error) {
	hash, mgfHash = crypto.SHA1, crypto.SHA1
	if len(p) == 0 {
		return hash, mgfHash, nil
	}
	bad := func(what string) (crypto.Hash, crypto.Hash, error) {
		return 0, 0, fmt.Errorf("cms: RSAES-OAEP-params: %s", what)
	}
	var seq, h, mgf, src cryptobyte.String
	var hasH, hasMGF, hasSrc bool
	if !p.ReadASN1(&seq, cbasn1.SEQUENCE) || !p.Empty() ||
		!seq.ReadOptionalASN1(&h, &hasH, tagCtx0Cons) ||
		!seq.ReadOptionalASN1(&mgf, &hasMGF, tagCtx1Cons) ||
		!seq.ReadOptionalASN1(&src, &hasSrc, tagCtx2Cons) || !seq.Empty() {
		return bad("malformed")
	}
	if hasH {
		if hash, err = readHashAlgID(&h, true); err != nil || !h.Empty() {
			return bad("hash not allowed")
		}
	}
	if hasMGF {
		var oid string
		var mp cryptobyte.String
		if !readAlgID(&mgf, &oid, &mp) || !mgf.Empty() || oid != oidMGF1 {
			return bad("mask generation function must be MGF1")
		}
		if mgfHash, err = readHashAlgID(&mp, true); err != nil || !mp.Empty() {
			return bad("MGF1 hash not allowed")
		}
	}
	if hasSrc {
		var oid string
		var sp cryptobyte.String
		var label []byte
		if !readAlgID(&src, &oid, &sp) || !src.Empty() || oid != oidPSpecified ||
			!sp.ReadASN1Bytes(&label, cbasn1.OCTET_STRING) || !sp.Empty() || len(label) != 0 {
			return bad("only the empty pSpecified label is supported")
		}
	}
	return hash, mgfHash, nil
}

// Recipient returns the RecipientInfo addressed to cert.
func (e *Envelope) Recipient(cert *x509.Certificate) (*Recipient, error) {
	for i := range e.Recipients {
		if e.Recipients[i].Matches(cert) {
			return &e.Recipients[i], nil
		}
	}
	return nil, ErrNoRecipient
}

// ErrNoRecipient means the envelope is not addressed to the given certificate.
var ErrNoRecipient = errors.New("cms: no RecipientInfo for this certificate")

// ErrDecrypt is what every failure to open an envelope's content looks like
// once a RecipientInfo for the caller's certificate is found: a key unwrap that
// fails (wrong OAEP padding, token refusal, key of the wrong size), a key
// unwrap that "succeeds" with a wrong key, and a GCM tag that does not match
// all take the same path (RFC 3218 §2.3: a random content key stands in for
// one that did not unwrap) and end in an error with this text, so a sender
// cannot tell them apart by the answer.
var ErrDecrypt = errors.New("cms: content decryption failed")

// ErrNotAuthenticated is returned, before any key operation, for envelopes
// whose content encryption has no integrity (EnvelopedData with AES-CBC):
// their decryption would be a padding oracle.
var ErrNotAuthenticated = errors.New("only authenticated encryption (AuthEnvelopedData with AES-256-GCM) is decrypted")

// ErrContentTypeNotBound is returned by ParseEnvelope for an AuthEnvelopedData
// whose content type is not id-data but is not covered by authenticated
// attributes, or whose content-type attribute disagrees with it.
var ErrContentTypeNotBound = errors.New("content type not authenticated")

// decryptError carries the cause of a content-decryption failure for the
// recipient's own logs (errors.As / errors.Is through Unwrap) while showing
// only ErrDecrypt's text.
type decryptError struct{ cause error }

func (e *decryptError) Error() string        { return ErrDecrypt.Error() }
func (e *decryptError) Is(target error) bool { return target == ErrDecrypt }
func (e *decryptError) Unwrap() error        { return e.cause }

// Decrypt unwraps the content key with key (RSAES-OAEP with the envelope's
// parameters) and decrypts the content. The one cipher policy holds:
// only AuthEnvelopedData (AES-256-GCM) is decrypted, with RSAES-OAEP key
// transport (PKCS#1 v1.5 is refused at parse time); EnvelopedData (AES-CBC)
// is refused with ErrNotAuthenticated before the key is used. Every failure
// after that point is ErrDecrypt.
func (e *Envelope) Decrypt(cert *x509.Certificate, key crypto.Decrypter) ([]byte, error) {
	if cert == nil || key == nil {
		return nil, errors.New("cms: Decrypt needs a certificate and a key")
	}
	if err := e.checkPolicy(); err != nil {
		return nil, err
	}
	r, err := e.Recipient(cert)
	if err != nil {
		return nil, err
	}
	if r.Unsupported != nil {
		return nil, r.Unsupported
	}
	if r.kari != nil {
		return nil, errors.New("cms: the RecipientInfo for this certificate is key agreement; use DecryptAgree")
	}
	if eq, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(cert.PublicKey) {
		return nil, errors.New("cms: decryption key does not match the recipient certificate")
	}
	cek, uerr := key.Decrypt(rand.Reader, r.encryptedKey, &rsa.OAEPOptions{Hash: r.OAEPHash, MGFHash: r.MGFHash})
	return e.openWith(cek, uerr)
}

// checkPolicy is the cipher policy, applied before any key operation.
func (e *Envelope) checkPolicy() error {
	if e.Cipher != AES256GCM {
		return fmt.Errorf("cms: %s EnvelopedData refused: %w", e.Cipher, ErrNotAuthenticated)
	}
	return nil
}

// openWith decrypts the content with the unwrapped content key, or, when the
// unwrap failed (uerr) or gave a key of the wrong size, with a random key, so
// that both end in the same GCM failure: one path, one error text.
func (e *Envelope) openWith(cek []byte, uerr error) ([]byte, error) {
	cause := uerr
	if cause == nil && len(cek) != cekSize {
		cause = fmt.Errorf("content key of %d bytes", len(cek))
	}
	if cause != nil {
		cek = make([]byte, cekSize)
		if _, err := rand.Read(cek); err != nil {
			return nil, fmt.Errorf("cms: %w", err)
		}
	}
	out, err := e.decryptContent(cek)
	if cause == nil {
		cause = err
	}
	if cause != nil || err != nil {
		return nil, &decryptError{cause: cause}
	}
	return out, nil
}

// decryptContent decrypts the AES-256-GCM content with a 32-byte content key.
func (e *Envelope) decryptContent(cek []byte) ([]byte, error) {
	if e.Cipher != AES256GCM || len(cek) != cekSize {
		return nil, ErrNotAuthenticated // unreachable: checkPolicy and openWith come first
	}
	block, err := aes.NewCipher(cek)
	if err != nil {
		return nil, fmt.Errorf("cms: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("cms: %w", err)
	}
	sealed := make([]byte, 0, len(e.ciphertext)+len(e.tag))
	sealed = append(append(sealed, e.ciphertext...), e.tag...)
	out, err := aead.Open(make([]byte, 0, len(e.ciphertext)), e.iv, sealed, e.aad)
	if err != nil {
		return nil, errors.New("GCM tag mismatch")
	}
	return out, nil
}

// Decrypt parses a DER AuthEnvelopedData and decrypts it for cert with key,
// returning the content and its (authenticated) content type. It applies the
// one cipher policy of (*Envelope).Decrypt.
func Decrypt(der []byte, cert *x509.Certificate, key crypto.Decrypter) ([]byte, x509.OID, error) {
	env, err := ParseEnvelope(der)
	if err != nil {
		return nil, x509.OID{}, err
	}
	out, err := env.Decrypt(cert, key)
	if err != nil {
		return nil, x509.OID{}, err
	}
	return out, env.ContentType(), nil
}
