package cms

import (
	"crypto"
	"crypto/x509"
	"fmt"
)

// Object identifiers are kept as constant strings holding their DER content
// octets: they are immutable, comparable, usable as map keys, and can express
// arcs larger than an int (the project's UUID arc under 2.25 needs 128 bits,
// which encoding/asn1.ObjectIdentifier cannot hold).
const (
	oidData              = "\x2a\x86\x48\x86\xf7\x0d\x01\x07\x01"                                                 // 1.2.840.113549.1.7.1
	oidSignedData        = "\x2a\x86\x48\x86\xf7\x0d\x01\x07\x02"                                                 // 1.2.840.113549.1.7.2
	oidEnvelopedData     = "\x2a\x86\x48\x86\xf7\x0d\x01\x07\x03"                                                 // 1.2.840.113549.1.7.3
	oidAuthEnvelopedData = "\x2a\x86\x48\x86\xf7\x0d\x01\x09\x10\x01\x17"                                         // 1.2.840.113549.1.9.16.1.23
	oidAttrContentType   = "\x2a\x86\x48\x86\xf7\x0d\x01\x09\x03"                                                 // 1.2.840.113549.1.9.3
	oidAttrMessageDigest = "\x2a\x86\x48\x86\xf7\x0d\x01\x09\x04"                                                 // 1.2.840.113549.1.9.4
	oidAttrSigningTime   = "\x2a\x86\x48\x86\xf7\x0d\x01\x09\x05"                                                 // 1.2.840.113549.1.9.5
	oidMD5               = "\x2a\x86\x48\x86\xf7\x0d\x02\x05"                                                     // 1.2.840.113549.2.5
	oidSHA1              = "\x2b\x0e\x03\x02\x1a"                                                                 // 1.3.14.3.2.26
	oidSHA256            = "\x60\x86\x48\x01\x65\x03\x04\x02\x01"                                                 // 2.16.840.1.101.3.4.2.1
	oidSHA384            = "\x60\x86\x48\x01\x65\x03\x04\x02\x02"                                                 // 2.16.840.1.101.3.4.2.2
	oidSHA512            = "\x60\x86\x48\x01\x65\x03\x04\x02\x03"                                                 // 2.16.840.1.101.3.4.2.3
	oidRSAEncryption     = "\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01"                                                 // 1.2.840.113549.1.1.1
	oidSHA1WithRSA       = "\x2a\x86\x48\x86\xf7\x0d\x01\x01\x05"                                                 // 1.2.840.113549.1.1.5
	oidRSAESOAEP         = "\x2a\x86\x48\x86\xf7\x0d\x01\x01\x07"                                                 // 1.2.840.113549.1.1.7
	oidMGF1              = "\x2a\x86\x48\x86\xf7\x0d\x01\x01\x08"                                                 // 1.2.840.113549.1.1.8
	oidPSpecified        = "\x2a\x86\x48\x86\xf7\x0d\x01\x01\x09"                                                 // 1.2.840.113549.1.1.9
	oidRSASSAPSS         = "\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0a"                                                 // 1.2.840.113549.1.1.10
	oidSHA256WithRSA     = "\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0b"                                                 // 1.2.840.113549.1.1.11
	oidSHA384WithRSA     = "\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0c"                                                 // 1.2.840.113549.1.1.12
	oidSHA512WithRSA     = "\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0d"                                                 // 1.2.840.113549.1.1.13
	oidECPublicKey       = "\x2a\x86\x48\xce\x3d\x02\x01"                                                         // 1.2.840.10045.2.1
	oidECDSAWithSHA1     = "\x2a\x86\x48\xce\x3d\x04\x01"                                                         // 1.2.840.10045.4.1
	oidECDSAWithSHA256   = "\x2a\x86\x48\xce\x3d\x04\x03\x02"                                                     // 1.2.840.10045.4.3.2
	oidECDSAWithSHA384   = "\x2a\x86\x48\xce\x3d\x04\x03\x03"                                                     // 1.2.840.10045.4.3.3
	oidECDSAWithSHA512   = "\x2a\x86\x48\xce\x3d\x04\x03\x04"                                                     // 1.2.840.10045.4.3.4
	oidAES256CBC         = "\x60\x86\x48\x01\x65\x03\x04\x01\x2a"                                                 // 2.16.840.1.101.3.4.1.42
	oidAES256GCM         = "\x60\x86\x48\x01\x65\x03\x04\x01\x2e"                                                 // 2.16.840.1.101.3.4.1.46
	oidProtocolArc       = "\x69\x83\xbf\xe5\xf2\x95\xde\xcb\xca\xa3\xb1\xa8\x9e\xd1\xf9\xb7\x9f\xd0\x94\x6b\x02" // 2.25.297611510319390661672115465532967488107.2
)

// oidNames gives readable names for error messages.
var oidNames = map[string]string{
	oidData: "id-data", oidSignedData: "id-signedData", oidEnvelopedData: "id-envelopedData",
	oidAuthEnvelopedData: "id-ct-authEnvelopedData", oidMD5: "md5", oidSHA1: "sha1",
	oidSHA256: "sha256", oidSHA384: "sha384", oidSHA512: "sha512",
	oidRSAEncryption: "rsaEncryption", oidSHA1WithRSA: "sha1WithRSAEncryption",
	oidRSAESOAEP: "id-RSAES-OAEP", oidMGF1: "id-mgf1", oidRSASSAPSS: "id-RSASSA-PSS",
	oidSHA256WithRSA: "sha256WithRSAEncryption", oidSHA384WithRSA: "sha384WithRSAEncryption",
	oidSHA512WithRSA: "sha512WithRSAEncryption", oidECPublicKey: "id-ecPublicKey",
	oidECDSAWithSHA1: "ecdsa-with-SHA1", oidECDSAWithSHA256: "ecdsa-with-SHA256",
	oidECDSAWithSHA384: "ecdsa-with-SHA384", oidECDSAWithSHA512: "ecdsa-with-SHA512",
	oidAES256CBC: "aes256-CBC", oidAES256GCM: "aes256-GCM", oidAES256Wrap: "id-aes256-wrap",
	oidECDHStdSHA256KDF:                    "dhSinglePass-stdDH-sha256kdf-scheme",
	"\x2b\x81\x05\x10\x86\x48\x3f\x00\x02": "dhSinglePass-stdDH-sha1kdf-scheme",
}

// oidString renders a DER-content OID for error messages.
func oidString(der string) string {
	if name, ok := oidNames[der]; ok {
		return name
	}
	var o x509.OID
	if err := o.UnmarshalBinary([]byte(der)); err != nil {
		return fmt.Sprintf("malformed OID %x", der)
	}
	return o.String()
}

// hashByOID is the allow-list of message digests, both for signatures and
// for the OAEP hash/MGF1 functions (where SHA-1 is additionally allowed).
var hashByOID = map[string]crypto.Hash{
	oidSHA1: crypto.SHA1, oidSHA256: crypto.SHA256, oidSHA384: crypto.SHA384, oidSHA512: crypto.SHA512,
}

func hashOID(h crypto.Hash) (string, bool) {
	switch h {
	case crypto.SHA1:
		return oidSHA1, true
	case crypto.SHA256:
		return oidSHA256, true
	case crypto.SHA384:
		return oidSHA384, true
	case crypto.SHA512:
		return oidSHA512, true
	}
	return "", false
}

// DataContentType returns id-data (1.2.840.113549.1.7.1), the default content type.
func DataContentType() x509.OID { return mustOID(oidData) }

// ProtocolContentType returns the content type of protocol message n,
// 2.25.297611510319390661672115465532967488107.2.n.
func ProtocolContentType(n uint64) x509.OID {
	b := []byte(oidProtocolArc)
	// Base-128 encoding of the last arc, most significant group first.
	var tmp [10]byte
	i := len(tmp) - 1
	tmp[i] = byte(n & 0x7f)
	for n >>= 7; n > 0; n >>= 7 {
		i--
		tmp[i] = byte(n&0x7f) | 0x80
	}
	return mustOID(string(append(b, tmp[i:]...)))
}

func mustOID(der string) x509.OID {
	var o x509.OID
	if err := o.UnmarshalBinary([]byte(der)); err != nil {
		panic("cms: bad built-in OID") // unreachable: only called with constants
	}
	return o
}

// oidDER returns the DER content octets of o, or def if o is the zero OID.
func oidDER(o x509.OID, def string) (string, error) {
	b, err := o.MarshalBinary()
	if err != nil {
		return "", fmt.Errorf("cms: content type: %w", err)
	}
	if len(b) == 0 {
		return def, nil
	}
	return string(b), nil
}
