package cms

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

var (
	tagCtx0Cons = cbasn1.Tag(0).ContextSpecific().Constructed()
	tagCtx1Cons = cbasn1.Tag(1).ContextSpecific().Constructed()
	tagCtx2Cons = cbasn1.Tag(2).ContextSpecific().Constructed()
	tagCtx3Cons = cbasn1.Tag(3).ContextSpecific().Constructed()
	tagCtx0Prim = cbasn1.Tag(0).ContextSpecific()
)

// errMalformed is returned, wrapped with context, when DER is malformed.
var errMalformed = errors.New("malformed or truncated DER")

func malformed(what string) error {
	return fmt.Errorf("cms: %s: %w", what, errMalformed)
}

func addOID(b *cryptobyte.Builder, oid string) {
	b.AddASN1(cbasn1.OBJECT_IDENTIFIER, func(b *cryptobyte.Builder) { b.AddBytes([]byte(oid)) })
}

// addAlgID writes AlgorithmIdentifier{oid, params}; params may be nil (absent).
func addAlgID(b *cryptobyte.Builder, oid string, params cryptobyte.BuilderContinuation) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		addOID(b, oid)
		if params != nil {
			params(b)
		}
	})
}

// addHashAlgID writes a hash AlgorithmIdentifier; withNull selects the
// NULL-parameter form. OpenSSL writes NULL inside RSASSA-PSS-params but
// omits it inside RSAES-OAEP-params and for digestAlgorithms; we copy it
// byte for byte.
func addHashAlgID(b *cryptobyte.Builder, oid string, withNull bool) {
	if withNull {
		addAlgID(b, oid, func(b *cryptobyte.Builder) { b.AddASN1NULL() })
		return
	}
	addAlgID(b, oid, nil)
}

// addSetOf writes a DER SET OF from already encoded elements, sorted as DER
// requires, under the given tag (SET, or an IMPLICIT context tag).
func addSetOf(b *cryptobyte.Builder, tag cbasn1.Tag, elems [][]byte) {
	sorted := slices.Clone(elems)
	slices.SortFunc(sorted, bytes.Compare)
	b.AddASN1(tag, func(b *cryptobyte.Builder) {
		for _, e := range sorted {
			b.AddBytes(e)
		}
	})
}

func readOID(s *cryptobyte.String, out *string) bool {
	var o cryptobyte.String
	if !s.ReadASN1(&o, cbasn1.OBJECT_IDENTIFIER) || len(o) == 0 {
		return false
	}
	*out = string(o)
	return true
}

// readAlgID reads an AlgorithmIdentifier, returning the OID and the raw
// parameters element (empty if absent).
func readAlgID(s *cryptobyte.String, oid *string, params *cryptobyte.String) bool {
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !readOID(&seq, oid) {
		return false
	}
	*params = nil
	if len(seq) == 0 {
		return true
	}
	var tag cbasn1.Tag
	return seq.ReadAnyASN1Element(params, &tag) && seq.Empty()
}

// paramsAbsentOrNull reports whether AlgorithmIdentifier parameters are
// absent or NULL, the two encodings in use for hash and RSA algorithms.
func paramsAbsentOrNull(p cryptobyte.String) bool {
	return len(p) == 0 || bytes.Equal(p, []byte{0x05, 0x00})
}

// readHashAlgID reads a hash AlgorithmIdentifier and maps it through the
// allow-list; allowSHA1 is only for RSAES-OAEP, never for signatures.
func readHashAlgID(s *cryptobyte.String, allowSHA1 bool) (crypto.Hash, error) {
	var oid string
	var params cryptobyte.String
	if !readAlgID(s, &oid, &params) {
		return 0, malformed("hash AlgorithmIdentifier")
	}
	return hashFromAlgID(oid, params, allowSHA1)
}

func hashFromAlgID(oid string, params cryptobyte.String, allowSHA1 bool) (crypto.Hash, error) {
	h, ok := hashByOID[oid]
	if !ok || (h == crypto.SHA1 && !allowSHA1) {
		return 0, fmt.Errorf("cms: digest algorithm %s not allowed", oidString(oid))
	}
	if !paramsAbsentOrNull(params) {
		return 0, fmt.Errorf("cms: digest algorithm %s has unexpected parameters", oidString(oid))
	}
	return h, nil
}

// issuerSerial identifies a certificate the way CMS does: by
// IssuerAndSerialNumber or by SubjectKeyIdentifier.
type issuerSerial struct {
	issuer []byte // raw DER Name
	serial *big.Int
	ski    []byte
}

func addIssuerAndSerial(b *cryptobyte.Builder, rawIssuer []byte, serial *big.Int) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(rawIssuer)
		b.AddASN1BigInt(serial)
	})
}

// readSignerID reads a SignerIdentifier / RecipientIdentifier: both are
// CHOICE { issuerAndSerialNumber, [0] IMPLICIT SubjectKeyIdentifier }.
func readSignerID(s *cryptobyte.String) (issuerSerial, error) {
	var id issuerSerial
	switch {
	case s.PeekASN1Tag(cbasn1.SEQUENCE):
		var seq, name cryptobyte.String
		id.serial = new(big.Int)
		if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1Element(&name, cbasn1.SEQUENCE) ||
			!seq.ReadASN1Integer(id.serial) || !seq.Empty() {
			return id, malformed("IssuerAndSerialNumber")
		}
		id.issuer = name
	case s.PeekASN1Tag(tagCtx0Prim):
		var ski cryptobyte.String
		if !s.ReadASN1(&ski, tagCtx0Prim) || len(ski) == 0 {
			return id, malformed("SubjectKeyIdentifier")
		}
		id.ski = ski
	default:
		return id, malformed("identifier (neither IssuerAndSerialNumber nor SubjectKeyIdentifier)")
	}
	return id, nil
}

// skipOptional skips an optional element with the given tag.
func skipOptional(s *cryptobyte.String, tag cbasn1.Tag) bool {
	return s.SkipOptionalASN1(tag)
}

// setTagged returns a copy of a [n] IMPLICIT SET OF element re-tagged as a
// universal SET, the form that is signed (signedAttrs) or authenticated
// (authAttrs). DER guarantees the length octets are unchanged.
func setTagged(elem []byte) []byte {
	out := slices.Clone(elem)
	out[0] = 0x31
	return out
}
