package cms_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/setpay/setpay/cms"
)

func BenchmarkSignVerify(b *testing.B) {
	f := getFixture(b)
	for _, tc := range []struct {
		name string
		p    party
		pss  bool
	}{{"ECDSA-P256", f.p256, false}, {"RSA-PSS-2048", f.rsa, true}} {
		opts := cms.SignOptions{Signer: tc.p.key, Certificate: tc.p.cert, SigningTime: testNow, PSS: tc.pss}
		b.Run(tc.name+"/Sign", func(b *testing.B) {
			for b.Loop() {
				if _, err := cms.Sign(message, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
		der, err := cms.Sign(message, opts)
		if err != nil {
			b.Fatal(err)
		}
		vo := cms.VerifyOptions{Certificates: []*x509.Certificate{tc.p.cert}}
		b.Run(tc.name+"/Verify", func(b *testing.B) {
			for b.Loop() {
				sd, err := cms.ParseSignedData(der)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := sd.Verify(vo); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkEncryptDecrypt(b *testing.B) {
	f := getFixture(b)
	for _, c := range []cms.Cipher{cms.AES256CBC, cms.AES256GCM} {
		opts := cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, Cipher: c, OAEPHash: crypto.SHA1}
		b.Run(c.String()+"/Encrypt", func(b *testing.B) {
			for b.Loop() {
				if _, err := cms.Encrypt(message, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
		der, err := cms.Encrypt(message, opts)
		if err != nil {
			b.Fatal(err)
		}
		if c != cms.AES256GCM {
			continue // CBC is never decrypted (cms.ErrNotAuthenticated)
		}
		b.Run(c.String()+"/Decrypt", func(b *testing.B) {
			for b.Loop() {
				if _, _, err := cms.Decrypt(der, f.rsa.cert, f.rsa.decrypter()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkDecryptFailures times the two ways an envelope fails to open that a
// sender can choose between, a broken GCM tag and a broken RSA-OAEP wrapped key,
// interleaved, and reports the ratio of their mean times (1 means no
// difference; the key path runs GCM with a random key, RFC 3218). The token's
// own OAEP decoding is not covered: this uses a software key.
func BenchmarkDecryptFailures(b *testing.B) {
	f := getFixture(b)
	der, err := cms.Encrypt(message, cms.EncryptOptions{Recipients: []*x509.Certificate{f.rsa.cert}, ContentType: cms.ProtocolContentType(3)})
	if err != nil {
		b.Fatal(err)
	}
	tag, key := bytes.Clone(der), bytes.Clone(der)
	tag[len(tag)-1] ^= 1
	key[bytes.Index(key, []byte{0x04, 0x82, 0x01, 0x00})+4+100] ^= 1
	var dTag, dKey time.Duration
	for b.Loop() {
		for _, tc := range []struct {
			der []byte
			d   *time.Duration
		}{{tag, &dTag}, {key, &dKey}} {
			start := time.Now()
			_, _, err := cms.Decrypt(tc.der, f.rsa.cert, f.rsa.decrypter())
			*tc.d += time.Since(start)
			if !errors.Is(err, cms.ErrDecrypt) {
				b.Fatalf("got %v", err)
			}
		}
	}
	b.ReportMetric(float64(dKey)/float64(dTag), "keybroken/tagbroken")
}
