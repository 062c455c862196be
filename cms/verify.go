package cms

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Default limits applied when a Limits field is zero.
const (
	DefaultMaxSize         = 16 << 20 // bytes of DER input
	DefaultMaxCertificates = 16       // certificates embedded in a SignedData
	DefaultMaxRecipients   = 16       // RecipientInfos in an envelope
)

// Limits bounds the work done on untrusted input. The zero value applies the
// Default* limits; a negative value is treated as zero (nothing allowed).
type Limits struct {
	MaxSize         int
	MaxCertificates int
	MaxRecipients   int
}

func (l Limits) maxSize() int         { return pick(l.MaxSize, DefaultMaxSize) }
func (l Limits) maxCertificates() int { return pick(l.MaxCertificates, DefaultMaxCertificates) }
func (l Limits) maxRecipients() int   { return pick(l.MaxRecipients, DefaultMaxRecipients) }

func pick(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

func (l Limits) checkSize(der []byte) error {
	if len(der) > l.maxSize() {
		return fmt.Errorf("cms: input of %d bytes exceeds the limit of %d", len(der), l.maxSize())
	}
	return nil
}

// SignedData is a parsed, not yet verified, SignedData with exactly one signer.
type SignedData struct {
	contentType string
	content     []byte
	attached    bool
	certs       []*x509.Certificate
	si          signerInfo
}

type signerInfo struct {
	sid         issuerSerial
	digest      crypto.Hash
	signedAttrs []byte // DER, re-tagged as SET: the signed bytes
	scheme      sigScheme
	signature   []byte

	contentType   string
	messageDigest []byte
	signingTime   time.Time
}

type sigKind int

const (
	sigECDSA sigKind = iota + 1
	sigPKCS1v15
	sigPSS
)

type sigScheme struct {
	kind    sigKind
	hash    crypto.Hash
	saltLen int
}

// ParseSignedData parses a DER ContentInfo(SignedData) with the default Limits.
func ParseSignedData(der []byte) (*SignedData, error) {
	return Limits{}.ParseSignedData(der)
}

// ParseSignedData parses a DER ContentInfo(SignedData). It rejects anything
// outside the algorithm allow-list, any SignerInfo count other than one, and
// input beyond the limits. The result must still be checked with Verify.
func (l Limits) ParseSignedData(der []byte) (*SignedData, error) {
	if err := l.checkSize(der); err != nil {
		return nil, err
	}
	body, err := readContentInfo(der, oidSignedData)
	if err != nil {
		return nil, err
	}
	var sd cryptobyte.String
	if !body.ReadASN1(&sd, cbasn1.SEQUENCE) || !body.Empty() {
		return nil, malformed("SignedData")
	}
	var version int64
	var digestAlgs, eci cryptobyte.String
	if !sd.ReadASN1Integer(&version) || !sd.ReadASN1(&digestAlgs, cbasn1.SET) || !sd.ReadASN1(&eci, cbasn1.SEQUENCE) {
		return nil, malformed("SignedData header")
	}
	if version < 1 || version > 5 {
		return nil, fmt.Errorf("cms: unsupported SignedData version %d", version)
	}
	out := &SignedData{}
	if !readOID(&eci, &out.contentType) {
		return nil, malformed("eContentType")
	}
	if !eci.Empty() {
		var explicit cryptobyte.String
		if !eci.ReadASN1(&explicit, tagCtx0Cons) || !eci.Empty() {
			return nil, malformed("eContent")
		}
		if !explicit.PeekASN1Tag(cbasn1.OCTET_STRING) {
			return nil, errors.New("cms: eContent is not a primitive OCTET STRING (BER constructed form is not accepted)")
		}
		if !explicit.ReadASN1Bytes(&out.content, cbasn1.OCTET_STRING) || !explicit.Empty() {
			return nil, malformed("eContent")
		}
		out.attached = true
	}
	var certs cryptobyte.String
	var hasCerts bool
	if !sd.ReadOptionalASN1(&certs, &hasCerts, tagCtx0Cons) {
		return nil, malformed("certificates")
	}
	for n := 0; !certs.Empty(); n++ {
		if n >= l.maxCertificates() {
			return nil, fmt.Errorf("cms: more than %d embedded certificates", l.maxCertificates())
		}
		var elem cryptobyte.String
		var tag cbasn1.Tag
		if !certs.ReadAnyASN1Element(&elem, &tag) {
			return nil, malformed("certificates")
		}
		if tag != cbasn1.SEQUENCE {
			continue // other CertificateChoices (attribute certificates etc.) are not used
		}
		c, err := x509.ParseCertificate(elem)
		if err != nil {
			return nil, fmt.Errorf("cms: embedded certificate %d: %w", n, err)
		}
		out.certs = append(out.certs, c)
	}
	if !skipOptional(&sd, tagCtx1Cons) { // crls
		return nil, malformed("crls")
	}
	var signerInfos cryptobyte.String
	if !sd.ReadASN1(&signerInfos, cbasn1.SET) || !sd.Empty() {
		return nil, malformed("signerInfos")
	}
	var n int
	for ; !signerInfos.Empty() && n < 2; n++ {
		var si cryptobyte.String
		if !signerInfos.ReadASN1(&si, cbasn1.SEQUENCE) {
			return nil, malformed("SignerInfo")
		}
		if n == 0 {
			if out.si, err = parseSignerInfo(si); err != nil {
				return nil, err
			}
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("cms: SignedData must have exactly one SignerInfo, found %s", map[int]string{0: "none", 2: "several"}[n])
	}
	// RFC 5652 §5.1, for what this package accepts (X.509 certificates only, no CRLs
	// of other formats): version 3 when the signer is named by key identifier or the
	// content is not id-data, else 1. Unsigned, so it must be exactly that.
	wantVersion := int64(1)
	if siVersionFor(out.si.sid) == 3 || out.contentType != oidData {
		wantVersion = 3
	}
	if version != wantVersion {
		return nil, fmt.Errorf("cms: SignedData version %d, but its contents require %d", version, wantVersion)
	}
	// digestAlgorithms is signed by nobody, so anything left unchecked in it is a
	// malleable part of the message (the interop suite slipped SHA-224 in). With one
	// SignerInfo it must be exactly that signer's digest algorithm.
	if err := checkDigestAlgorithms(digestAlgs, out.si.digest); err != nil {
		return nil, err
	}
	return out, nil
}

// siVersionFor is the SignerInfo version RFC 5652 §5.3 requires for sid.
func siVersionFor(sid issuerSerial) int64 {
	if sid.ski != nil {
		return 3
	}
	return 1
}

func checkDigestAlgorithms(set cryptobyte.String, want crypto.Hash) error {
	n := 0
	for ; !set.Empty(); n++ {
		h, err := readHashAlgID(&set, false)
		if err != nil {
			return fmt.Errorf("cms: SignedData digestAlgorithms: %w", err)
		}
		if h != want {
			return fmt.Errorf("cms: SignedData digestAlgorithms lists %v, but the signer used %v", h, want)
		}
	}
	if n != 1 {
		return fmt.Errorf("cms: SignedData digestAlgorithms must list exactly the signer's algorithm, found %d entries", n)
	}
	return nil
}

// readContentInfo checks ContentInfo{wantType, [0] EXPLICIT body} and returns body.
func readContentInfo(der []byte, wantType string) (cryptobyte.String, error) {
	s := cryptobyte.String(der)
	var ci, body cryptobyte.String
	var ct string
	if !s.ReadASN1(&ci, cbasn1.SEQUENCE) || !s.Empty() {
		return nil, malformed("ContentInfo")
	}
	if !readOID(&ci, &ct) {
		return nil, malformed("ContentInfo contentType")
	}
	if ct != wantType {
		return nil, fmt.Errorf("cms: ContentInfo holds %s, want %s", oidString(ct), oidString(wantType))
	}
	if !ci.ReadASN1(&body, tagCtx0Cons) || !ci.Empty() {
		return nil, malformed("ContentInfo content")
	}
	return body, nil
}

func parseSignerInfo(s cryptobyte.String) (signerInfo, error) {
	var si signerInfo
	var version int64
	if !s.ReadASN1Integer(&version) {
		return si, malformed("SignerInfo version")
	}
	if version != 1 && version != 3 {
		return si, fmt.Errorf("cms: unsupported SignerInfo version %d", version)
	}
	var err error
	if si.sid, err = readSignerID(&s); err != nil {
		return si, err
	}
	// RFC 5652 §5.3: the version follows from how the signer is named. It is not
	// signed, so accepting any other value would leave a malleable field.
	if want := siVersionFor(si.sid); version != want {
		return si, fmt.Errorf("cms: SignerInfo version %d, but its signer identifier requires %d", version, want)
	}
	if si.digest, err = readHashAlgID(&s, false); err != nil {
		return si, err
	}
	if !s.PeekASN1Tag(tagCtx0Cons) {
		return si, errors.New("cms: SignerInfo has no signed attributes")
	}
	var attrsElem cryptobyte.String
	if !s.ReadASN1Element(&attrsElem, tagCtx0Cons) {
		return si, malformed("signedAttrs")
	}
	si.signedAttrs = setTagged(attrsElem)
	if err := si.parseSignedAttrs(); err != nil {
		return si, err
	}
	var sigOID string
	var sigParams cryptobyte.String
	if !readAlgID(&s, &sigOID, &sigParams) {
		return si, malformed("signatureAlgorithm")
	}
	if si.scheme, err = parseSigScheme(sigOID, sigParams, si.digest); err != nil {
		return si, err
	}
	if !s.ReadASN1Bytes(&si.signature, cbasn1.OCTET_STRING) || len(si.signature) == 0 {
		return si, malformed("signature")
	}
	if !skipOptional(&s, tagCtx1Cons) || !s.Empty() {
		return si, malformed("SignerInfo trailer")
	}
	return si, nil
}

func (si *signerInfo) parseSignedAttrs() error {
	s := cryptobyte.String(si.signedAttrs)
	var set cryptobyte.String
	if !s.ReadASN1(&set, cbasn1.SET) {
		return malformed("signedAttrs")
	}
	seen := map[string]bool{}
	for !set.Empty() {
		var attr, values, value cryptobyte.String
		var oid string
		if !set.ReadASN1(&attr, cbasn1.SEQUENCE) || !readOID(&attr, &oid) ||
			!attr.ReadASN1(&values, cbasn1.SET) || !attr.Empty() {
			return malformed("signed attribute")
		}
		if oid != oidAttrContentType && oid != oidAttrMessageDigest && oid != oidAttrSigningTime {
			continue // other attributes are signed but carry nothing we act on
		}
		if seen[oid] {
			return fmt.Errorf("cms: duplicate signed attribute %s", oidString(oid))
		}
		seen[oid] = true
		var tag cbasn1.Tag
		if !values.ReadAnyASN1Element(&value, &tag) || !values.Empty() {
			return fmt.Errorf("cms: signed attribute %s must have exactly one value", oidString(oid))
		}
		ok := false
		switch oid {
		case oidAttrContentType:
			ok = readOID(&value, &si.contentType)
		case oidAttrMessageDigest:
			ok = value.ReadASN1Bytes(&si.messageDigest, cbasn1.OCTET_STRING)
		case oidAttrSigningTime:
			if tag == cbasn1.UTCTime {
				ok = value.ReadASN1UTCTime(&si.signingTime)
			} else {
				ok = value.ReadASN1GeneralizedTime(&si.signingTime)
			}
		}
		if !ok || !value.Empty() {
			return malformed("signed attribute " + oidString(oid))
		}
	}
	if !seen[oidAttrContentType] || !seen[oidAttrMessageDigest] {
		return errors.New("cms: signed attributes lack contentType or messageDigest")
	}
	return nil
}

// parseSigScheme maps signatureAlgorithm onto the allow-list and checks
// that it agrees with the SignerInfo digestAlgorithm.
func parseSigScheme(oid string, params cryptobyte.String, digest crypto.Hash) (sigScheme, error) {
	withHash := func(kind sigKind, h crypto.Hash) (sigScheme, error) {
		if h != digest {
			return sigScheme{}, fmt.Errorf("cms: signature algorithm %s disagrees with digest algorithm %v", oidString(oid), digest)
		}
		return sigScheme{kind: kind, hash: h}, nil
	}
	switch oid {
	case oidECDSAWithSHA256, oidECDSAWithSHA384, oidECDSAWithSHA512:
		if len(params) != 0 {
			return sigScheme{}, fmt.Errorf("cms: %s must not have parameters", oidString(oid))
		}
		return withHash(sigECDSA, map[string]crypto.Hash{oidECDSAWithSHA256: crypto.SHA256,
			oidECDSAWithSHA384: crypto.SHA384, oidECDSAWithSHA512: crypto.SHA512}[oid])
	case oidECPublicKey: // some signers name the key type; the hash is then digestAlgorithm
		return withHash(sigECDSA, digest)
	case oidSHA256WithRSA, oidSHA384WithRSA, oidSHA512WithRSA, oidRSAEncryption:
		if !paramsAbsentOrNull(params) {
			return sigScheme{}, fmt.Errorf("cms: %s has unexpected parameters", oidString(oid))
		}
		h := map[string]crypto.Hash{oidSHA256WithRSA: crypto.SHA256, oidSHA384WithRSA: crypto.SHA384,
			oidSHA512WithRSA: crypto.SHA512, oidRSAEncryption: digest}[oid] // OpenSSL writes rsaEncryption
		return withHash(sigPKCS1v15, h)
	case oidRSASSAPSS:
		s, err := parsePSSParams(params)
		if err != nil {
			return sigScheme{}, err
		}
		if s.hash != digest {
			return sigScheme{}, fmt.Errorf("cms: RSASSA-PSS hash %v disagrees with digest algorithm %v", s.hash, digest)
		}
		return s, nil
	}
	return sigScheme{}, fmt.Errorf("cms: signature algorithm %s not allowed", oidString(oid))
}

// parsePSSParams reads RSASSA-PSS-params (RFC 4055). Defaults (SHA-1) are
// rejected by the hash allow-list; MGF1 must use the same hash as the
// message, which is also what crypto/rsa implements.
func parsePSSParams(p cryptobyte.String) (sigScheme, error) {
	bad := func(what string) (sigScheme, error) {
		return sigScheme{}, fmt.Errorf("cms: RSASSA-PSS-params: %s", what)
	}
	var seq, hashAlg, mgfAlg, salt, trailer cryptobyte.String
	var hasHash, hasMGF, hasSalt, hasTrailer bool
	if !p.ReadASN1(&seq, cbasn1.SEQUENCE) || !p.Empty() ||
		!seq.ReadOptionalASN1(&hashAlg, &hasHash, tagCtx0Cons) ||
		!seq.ReadOptionalASN1(&mgfAlg, &hasMGF, tagCtx1Cons) ||
		!seq.ReadOptionalASN1(&salt, &hasSalt, tagCtx2Cons) ||
		!seq.ReadOptionalASN1(&trailer, &hasTrailer, tagCtx3Cons) || !seq.Empty() {
		return bad("malformed")
	}
	if !hasHash || !hasMGF {
		return bad("default SHA-1 hash or MGF1-SHA-1 not allowed")
	}
	h, err := readHashAlgID(&hashAlg, false)
	if err != nil || !hashAlg.Empty() {
		return bad("hash not allowed")
	}
	var mgfOID string
	var mgfParams cryptobyte.String
	if !readAlgID(&mgfAlg, &mgfOID, &mgfParams) || !mgfAlg.Empty() || mgfOID != oidMGF1 {
		return bad("mask generation function must be MGF1")
	}
	mh, err := readHashAlgID(&mgfParams, false)
	if err != nil || !mgfParams.Empty() || mh != h {
		return bad("MGF1 hash must equal the message hash")
	}
	saltLen := int64(20)
	if hasSalt && (!salt.ReadASN1Integer(&saltLen) || !salt.Empty()) {
		return bad("malformed saltLength")
	}
	if saltLen < 0 || saltLen > 1024 {
		return bad("saltLength out of range")
	}
	if hasTrailer {
		var tf int64
		if !trailer.ReadASN1Integer(&tf) || !trailer.Empty() || tf != 1 {
			return bad("trailerField must be 1")
		}
	}
	// A saltLength of 0 reaches crypto/rsa as PSSSaltLengthAuto, which
	// accepts the (valid) zero-salt signature along with any other length.
	return sigScheme{kind: sigPSS, hash: h, saltLen: int(saltLen)}, nil
}

// Content returns the encapsulated content, or nil if it is detached.
func (sd *SignedData) Content() []byte { return sd.content }

// Detached reports whether the content is absent from the SignedData.
func (sd *SignedData) Detached() bool { return !sd.attached }

// ContentType returns the eContentType.
func (sd *SignedData) ContentType() x509.OID { return mustOIDLenient(sd.contentType) }

// Certificates returns the embedded certificates (not validated).
func (sd *SignedData) Certificates() []*x509.Certificate { return sd.certs }

// SigningTime returns the signingTime attribute, or the zero time if absent.
// It is only trustworthy after Verify succeeds.
func (sd *SignedData) SigningTime() time.Time { return sd.si.signingTime }

// mustOIDLenient converts a parsed OID; parsed OIDs that x509.OID rejects
// yield the zero OID rather than a panic.
func mustOIDLenient(der string) x509.OID {
	var o x509.OID
	_ = o.UnmarshalBinary([]byte(der))
	return o
}

// VerifyOptions configures Verify.
type VerifyOptions struct {
	// Certificates are searched for the signer before the embedded ones,
	// typically a cache keyed by thumbprint.
	Certificates []*x509.Certificate
	// Content is the detached content; it must be nil when the content is
	// embedded.
	Content []byte
}

// Verify checks the messageDigest and contentType attributes and the
// signature with the signer certificate's public key, and returns that
// certificate. It does not validate the certificate chain.
func (sd *SignedData) Verify(opts VerifyOptions) (*x509.Certificate, error) {
	content := sd.content
	switch {
	case sd.attached && opts.Content != nil:
		return nil, errors.New("cms: detached content supplied but the SignedData embeds its content")
	case !sd.attached && opts.Content == nil:
		return nil, errors.New("cms: SignedData is detached and no content was supplied")
	case !sd.attached:
		content = opts.Content
	}
	si := &sd.si
	cert := findCert(si.sid, opts.Certificates, sd.certs)
	if cert == nil {
		return nil, errors.New("cms: signer certificate not found")
	}
	h := si.digest.New()
	h.Write(content)
	if subtle.ConstantTimeCompare(h.Sum(nil), si.messageDigest) != 1 {
		return nil, errors.New("cms: messageDigest does not match the content")
	}
	if si.contentType != sd.contentType {
		return nil, fmt.Errorf("cms: contentType attribute %s differs from eContentType %s",
			oidString(si.contentType), oidString(sd.contentType))
	}
	h = si.scheme.hash.New()
	h.Write(si.signedAttrs)
	digest := h.Sum(nil)
	var err error
	switch pub := cert.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if si.scheme.kind != sigECDSA {
			return nil, errors.New("cms: signature algorithm does not fit the signer's ECDSA key")
		}
		if !ecdsa.VerifyASN1(pub, digest, si.signature) {
			err = errors.New("ECDSA verification failed")
		}
	case *rsa.PublicKey:
		switch si.scheme.kind {
		case sigPKCS1v15:
			err = rsa.VerifyPKCS1v15(pub, si.scheme.hash, digest, si.signature)
		case sigPSS:
			err = rsa.VerifyPSS(pub, si.scheme.hash, digest, si.signature,
				&rsa.PSSOptions{SaltLength: si.scheme.saltLen, Hash: si.scheme.hash})
		default:
			return nil, errors.New("cms: signature algorithm does not fit the signer's RSA key")
		}
	default:
		return nil, fmt.Errorf("cms: unsupported signer key type %T", cert.PublicKey)
	}
	if err != nil {
		return nil, fmt.Errorf("cms: invalid signature: %w", err)
	}
	return cert, nil
}

// findCert returns the first certificate matching id.
func findCert(id issuerSerial, lists ...[]*x509.Certificate) *x509.Certificate {
	for _, l := range lists {
		for _, c := range l {
			if c != nil && id.matches(c) {
				return c
			}
		}
	}
	return nil
}

func (id issuerSerial) matches(c *x509.Certificate) bool {
	if id.ski != nil {
		return len(c.SubjectKeyId) > 0 && bytes.Equal(id.ski, c.SubjectKeyId)
	}
	return id.serial != nil && c.SerialNumber != nil && id.serial.Cmp(c.SerialNumber) == 0 &&
		bytes.Equal(id.issuer, c.RawIssuer)
}
