package cms

import (
	"testing"

	"golang.org/x/crypto/cryptobyte"
)

// FuzzAuthAttrs feeds the authAttrs parser of AuthEnvelopedData (untrusted
// DER, run before any key operation): it must never panic, and it accepts only
// attribute sets whose content-type attribute names the given type.
func FuzzAuthAttrs(f *testing.F) {
	good, err := encodeContentTypeAuthAttrs(oidProtocolArc + "\x03")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, []byte(oidProtocolArc+"\x03"))
	f.Add(good, []byte(oidData))
	f.Add([]byte{0xa1, 0x00}, []byte(oidData))
	f.Add([]byte{0xa1, 0x02, 0x30, 0x00}, []byte(oidData))
	f.Add(append(append([]byte{0xa1, byte(2 * (len(good) - 2))}, good[2:]...), good[2:]...), []byte(oidProtocolArc+"\x03"))
	f.Fuzz(func(t *testing.T, elem, ct []byte) {
		if err := checkAuthAttrs(cryptobyte.String(elem), string(ct)); err != nil {
			return
		}
		// Accepted: the set re-tags to a SET for the AAD, and the type is bound.
		if len(elem) == 0 || setTagged(elem)[0] != 0x31 {
			t.Fatalf("accepted authAttrs %x that do not re-tag", elem)
		}
		if len(ct) == 0 {
			t.Fatalf("accepted authAttrs for an empty content type")
		}
	})
}
