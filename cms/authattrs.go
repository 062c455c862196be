package cms

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// maxAuthAttrs bounds the authenticated attributes of an AuthEnvelopedData.
const maxAuthAttrs = 16

// encodeContentTypeAuthAttrs returns authAttrs [1] IMPLICIT SET OF Attribute
// holding the one content-type attribute (RFC 5652 §11.1) for ct.
func encodeContentTypeAuthAttrs(ct string) ([]byte, error) {
	var attr cryptobyte.Builder
	attr.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		addOID(b, oidAttrContentType)
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { addOID(b, ct) })
	})
	a, err := attr.Bytes()
	if err != nil {
		return nil, fmt.Errorf("cms: encoding authAttrs: %w", err)
	}
	var b cryptobyte.Builder
	addSetOf(&b, tagCtx1Cons, [][]byte{a})
	out, err := b.Bytes()
	if err != nil {
		return nil, fmt.Errorf("cms: encoding authAttrs: %w", err)
	}
	return out, nil
}

// checkAuthAttrs parses the authAttrs element ([1] IMPLICIT SET OF Attribute)
// of an AuthEnvelopedData: at most maxAuthAttrs attributes, each type once,
// each with at least one value, and exactly one content-type attribute with
// one value equal to ct, the EncryptedContentInfo's content type. It runs at
// parse time, before any key operation: a relabelled envelope is refused
// without touching the token.
func checkAuthAttrs(elem cryptobyte.String, ct string) error {
	var set cryptobyte.String
	if !elem.ReadASN1(&set, tagCtx1Cons) || !elem.Empty() || set.Empty() {
		return malformed("authAttrs")
	}
	seen := map[string]bool{}
	var bound bool
	for n := 0; !set.Empty(); n++ {
		if n >= maxAuthAttrs {
			return fmt.Errorf("cms: more than %d authenticated attributes", maxAuthAttrs)
		}
		var attr, values cryptobyte.String
		var typ string
		if !set.ReadASN1(&attr, cbasn1.SEQUENCE) || !readOID(&attr, &typ) ||
			!attr.ReadASN1(&values, cbasn1.SET) || !attr.Empty() || values.Empty() {
			return malformed("authenticated attribute")
		}
		if seen[typ] && typ == oidAttrContentType {
			return fmt.Errorf("cms: content-type attribute appears twice: %w", ErrContentTypeNotBound)
		}
		if seen[typ] {
			return fmt.Errorf("cms: authenticated attribute %s appears twice", oidString(typ))
		}
		seen[typ] = true
		if typ != oidAttrContentType {
			continue
		}
		var v string
		if !readOID(&values, &v) || !values.Empty() {
			return fmt.Errorf("cms: content-type attribute must hold one OID: %w", ErrContentTypeNotBound)
		}
		if v != ct {
			return fmt.Errorf("cms: content-type attribute %s differs from the content type %s: %w", oidString(v), oidString(ct), ErrContentTypeNotBound)
		}
		bound = true
	}
	if !bound {
		return fmt.Errorf("cms: authenticated attributes lack the content-type attribute: %w", ErrContentTypeNotBound)
	}
	return nil
}
