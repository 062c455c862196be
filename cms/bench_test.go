package cms_test

import (
	"crypto"
	"crypto/x509"
	"testing"

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
		b.Run(c.String()+"/Decrypt", func(b *testing.B) {
			for b.Loop() {
				if _, _, err := cms.Decrypt(der, f.rsa.cert, f.rsa.decrypter()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
