package cms

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// pssSaltLength is the salt length written in RSASSA-PSS-params: the
// digest length, which every PKCS#11 token accepts for CKM_SHA256_RSA_PKCS_PSS.
const pssSaltLength = 32

// SignOptions configures Sign. There are no package-level defaults to mutate;
// everything is passed here.
type SignOptions struct {
	// ContentType is the eContentType; the zero OID means id-data. Protocol
	// messages use ProtocolContentType(n).
	ContentType x509.OID
	// Signer holds the private key (typically token-backed).
	Signer crypto.Signer
	// Certificate is the signer's certificate; it identifies the signer and
	// must carry Signer's public key. It is embedded only if it is also
	// listed in Certificates.
	Certificate *x509.Certificate
	// Certificates are embedded in the SignedData; may be empty when the
	// peer caches certificates by thumbprint.
	Certificates []*x509.Certificate
	// Detached omits the content from the SignedData.
	Detached bool
	// SigningTime is written in the signingTime attribute; it is required
	// so that callers control the clock.
	SigningTime time.Time
	// PSS selects RSASSA-PSS (SHA-256, MGF1-SHA-256, salt 32) for RSA keys
	// instead of PKCS#1 v1.5.
	PSS bool
	// SubjectKeyID identifies the signer by subjectKeyIdentifier instead of
	// issuerAndSerialNumber.
	SubjectKeyID bool
}

// sigAlg describes the algorithms Sign uses for a key.
type sigAlg struct {
	hash      crypto.Hash
	digestOID string
	sigAlgID  cryptobyte.BuilderContinuation // writes the signatureAlgorithm AlgorithmIdentifier
	opts      crypto.SignerOpts
}

func chooseSigAlg(pub crypto.PublicKey, pss bool) (sigAlg, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if pss {
			return sigAlg{}, errors.New("cms: PSS requested for an ECDSA key")
		}
		var h crypto.Hash
		var oid string
		switch k.Curve {
		case elliptic.P256():
			h, oid = crypto.SHA256, oidECDSAWithSHA256
		case elliptic.P384():
			h, oid = crypto.SHA384, oidECDSAWithSHA384
		case elliptic.P521():
			h, oid = crypto.SHA512, oidECDSAWithSHA512
		default:
			return sigAlg{}, fmt.Errorf("cms: unsupported ECDSA curve %s", k.Curve.Params().Name)
		}
		dOID, _ := hashOID(h)
		return sigAlg{hash: h, digestOID: dOID, opts: h,
			sigAlgID: func(b *cryptobyte.Builder) { addAlgID(b, oid, nil) }}, nil
	case *rsa.PublicKey:
		if !pss {
			return sigAlg{hash: crypto.SHA256, digestOID: oidSHA256, opts: crypto.SHA256,
				sigAlgID: func(b *cryptobyte.Builder) {
					addAlgID(b, oidSHA256WithRSA, func(b *cryptobyte.Builder) { b.AddASN1NULL() })
				}}, nil
		}
		return sigAlg{hash: crypto.SHA256, digestOID: oidSHA256,
			opts:     &rsa.PSSOptions{SaltLength: pssSaltLength, Hash: crypto.SHA256},
			sigAlgID: func(b *cryptobyte.Builder) { addAlgID(b, oidRSASSAPSS, addPSSParamsSHA256) }}, nil
	default:
		return sigAlg{}, fmt.Errorf("cms: unsupported signer key type %T", pub)
	}
}

// addPSSParamsSHA256 writes RSASSA-PSS-params exactly as OpenSSL does for
// SHA-256: hash and MGF1 hash with NULL parameters, saltLength 32, and the
// default trailerField 1 omitted as DER requires.
func addPSSParamsSHA256(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(tagCtx0Cons, func(b *cryptobyte.Builder) { addHashAlgID(b, oidSHA256, true) })
		b.AddASN1(tagCtx1Cons, func(b *cryptobyte.Builder) {
			addAlgID(b, oidMGF1, func(b *cryptobyte.Builder) { addHashAlgID(b, oidSHA256, true) })
		})
		b.AddASN1(tagCtx2Cons, func(b *cryptobyte.Builder) { b.AddASN1Int64(pssSaltLength) })
	})
}

// Sign returns a DER ContentInfo holding a SignedData over content with one
// SignerInfo carrying the contentType, messageDigest and signingTime
// signed attributes.
func Sign(content []byte, opts SignOptions) ([]byte, error) {
	if opts.Signer == nil || opts.Certificate == nil {
		return nil, errors.New("cms: Sign needs both Signer and Certificate")
	}
	if opts.SigningTime.IsZero() {
		return nil, errors.New("cms: Sign needs an explicit SigningTime")
	}
	pub := opts.Signer.Public()
	if eq, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !eq.Equal(opts.Certificate.PublicKey) {
		return nil, errors.New("cms: signer key does not match the signer certificate")
	}
	if opts.SubjectKeyID && len(opts.Certificate.SubjectKeyId) == 0 {
		return nil, errors.New("cms: SubjectKeyID requested but the certificate has no subjectKeyIdentifier")
	}
	ct, err := oidDER(opts.ContentType, oidData)
	if err != nil {
		return nil, err
	}
	alg, err := chooseSigAlg(pub, opts.PSS)
	if err != nil {
		return nil, err
	}

	h := alg.hash.New()
	h.Write(content)
	contentDigest := h.Sum(nil)

	signedAttrs, err := encodeSignedAttrs(ct, contentDigest, opts.SigningTime)
	if err != nil {
		return nil, err
	}
	h = alg.hash.New()
	h.Write(signedAttrs)
	signature, err := opts.Signer.Sign(rand.Reader, h.Sum(nil), alg.opts)
	if err != nil {
		return nil, fmt.Errorf("cms: signing: %w", err)
	}

	// Version rules of RFC 5652 §5.1 and §5.3 for the choices we make.
	sdVersion, siVersion := int64(1), int64(1)
	if opts.SubjectKeyID {
		sdVersion, siVersion = 3, 3
	}
	if ct != oidData {
		sdVersion = 3
	}

	certs := make([][]byte, 0, len(opts.Certificates))
	for _, c := range opts.Certificates {
		if c == nil {
			return nil, errors.New("cms: nil certificate in Certificates")
		}
		certs = append(certs, c.Raw)
	}

	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		addOID(b, oidSignedData)
		b.AddASN1(tagCtx0Cons, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(sdVersion)
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { addHashAlgID(b, alg.digestOID, false) })
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					addOID(b, ct)
					if !opts.Detached {
						b.AddASN1(tagCtx0Cons, func(b *cryptobyte.Builder) { b.AddASN1OctetString(content) })
					}
				})
				if len(certs) > 0 {
					addSetOf(b, tagCtx0Cons, certs) // [0] IMPLICIT CertificateSet
				}
				b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1Int64(siVersion)
						if opts.SubjectKeyID {
							b.AddASN1(tagCtx0Prim, func(b *cryptobyte.Builder) { b.AddBytes(opts.Certificate.SubjectKeyId) })
						} else {
							addIssuerAndSerial(b, opts.Certificate.RawIssuer, opts.Certificate.SerialNumber)
						}
						addHashAlgID(b, alg.digestOID, false)
						attrs := setTagged(signedAttrs)
						attrs[0] = byte(tagCtx0Cons)
						b.AddBytes(attrs)
						alg.sigAlgID(b)
						b.AddASN1OctetString(signature)
					})
				})
			})
		})
	})
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("cms: encoding SignedData: %w", err)
	}
	return out, nil
}

// encodeSignedAttrs returns the DER SET OF Attribute that is signed.
func encodeSignedAttrs(contentType string, digest []byte, signingTime time.Time) ([]byte, error) {
	attr := func(oid string, value cryptobyte.BuilderContinuation) ([]byte, error) {
		var b cryptobyte.Builder
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addOID(b, oid)
			b.AddASN1(cbasn1.SET, value)
		})
		return b.Bytes()
	}
	t := signingTime.UTC().Truncate(time.Second)
	var elems [][]byte
	for _, a := range []struct {
		oid string
		v   cryptobyte.BuilderContinuation
	}{
		{oidAttrContentType, func(b *cryptobyte.Builder) { addOID(b, contentType) }},
		{oidAttrSigningTime, func(b *cryptobyte.Builder) {
			// RFC 5652 §11.3: UTCTime for 1950..2049, GeneralizedTime otherwise.
			if t.Year() >= 1950 && t.Year() < 2050 {
				b.AddASN1UTCTime(t)
			} else {
				b.AddASN1GeneralizedTime(t)
			}
		}},
		{oidAttrMessageDigest, func(b *cryptobyte.Builder) { b.AddASN1OctetString(digest) }},
	} {
		e, err := attr(a.oid, a.v)
		if err != nil {
			return nil, fmt.Errorf("cms: encoding signed attribute %s: %w", oidString(a.oid), err)
		}
		elems = append(elems, e)
	}
	var b cryptobyte.Builder
	addSetOf(&b, cbasn1.SET, elems)
	return b.Bytes()
}
