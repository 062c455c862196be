package cms_test

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/setpay/setpay/cms"
)

// opensslSeed adds an openssl-made message to the corpus when the binary is
// present; fuzzing works without it.
func opensslSeed(f *testing.F, args ...string) []byte {
	p, err := exec.LookPath("openssl")
	if err != nil {
		return nil
	}
	fx := getFixture(f)
	dir := f.TempDir()
	content := filepath.Join(dir, "content.bin")
	cert := filepath.Join(dir, "cert.pem")
	key := filepath.Join(dir, "key.pem")
	out := filepath.Join(dir, "out.der")
	if os.WriteFile(content, message, 0o600) != nil {
		return nil
	}
	writePEMs(f, cert, key, fx.rsa)
	full := append([]string{"cms"}, args...)
	full = append(full, "-binary", "-in", content, "-outform", "DER", "-out", out)
	for i, a := range full {
		switch a {
		case "CERT":
			full[i] = cert
		case "KEY":
			full[i] = key
		}
	}
	if err := exec.Command(p, full...).Run(); err != nil {
		f.Logf("openssl seed %v: %v", args, err)
		return nil
	}
	b, _ := os.ReadFile(out)
	return b
}

func writePEMs(f *testing.F, certPath, keyPath string, p party) {
	der, err := x509.MarshalPKCS8PrivateKey(p.key)
	if err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(certPath, pemBlock("CERTIFICATE", p.cert.Raw), 0o600); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(keyPath, pemBlock("PRIVATE KEY", der), 0o600); err != nil {
		f.Fatal(err)
	}
}

func FuzzParseSignedData(f *testing.F) {
	fx := getFixture(f)
	for _, o := range []cms.SignOptions{
		{Signer: fx.rsa.key, Certificate: fx.rsa.cert, Certificates: []*x509.Certificate{fx.rsa.cert}},
		{Signer: fx.rsa.key, Certificate: fx.rsa.cert, PSS: true, Detached: true},
		{Signer: fx.p256.key, Certificate: fx.p256.cert, SubjectKeyID: true, ContentType: cms.ProtocolContentType(1)},
		{Signer: fx.p384.key, Certificate: fx.p384.cert, Certificates: []*x509.Certificate{fx.p384.cert, fx.root.cert}},
	} {
		o.SigningTime = testNow
		der, err := cms.Sign(message, o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
	}
	for _, extra := range [][]string{{}, {"-keyopt", "rsa_padding_mode:pss"}} {
		if b := opensslSeed(f, append([]string{"-sign", "-nodetach", "-signer", "CERT", "-inkey", "KEY"}, extra...)...); b != nil {
			f.Add(b)
		}
	}
	cache := []*x509.Certificate{fx.rsa.cert, fx.p256.cert}
	f.Fuzz(func(t *testing.T, der []byte) {
		sd, err := cms.ParseSignedData(der)
		if err != nil {
			return
		}
		_ = sd.ContentType()
		_ = sd.SigningTime()
		opts := cms.VerifyOptions{Certificates: cache}
		if sd.Detached() {
			opts.Content = message
		}
		_, _ = sd.Verify(opts)
	})
}

func envelopeSeeds(f *testing.F) {
	fx := getFixture(f)
	for _, c := range []cms.Cipher{cms.AES256CBC, cms.AES256GCM} {
		for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
			der, err := cms.Encrypt(message, cms.EncryptOptions{Recipients: []*x509.Certificate{fx.rsa.cert, fx.rsa2.cert}, Cipher: c, OAEPHash: h})
			if err != nil {
				f.Fatal(err)
			}
			f.Add(der)
		}
	}
	for _, c := range []cms.Cipher{cms.AES256CBC, cms.AES256GCM} {
		der, err := cms.Encrypt(message, cms.EncryptOptions{Recipients: []*x509.Certificate{fx.p256.cert}, Cipher: c})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
	}
	// Typed envelopes carry authAttrs (the content-type attribute).
	for _, n := range []uint64{3, 106} {
		der, err := cms.Encrypt(message, cms.EncryptOptions{Recipients: []*x509.Certificate{fx.rsa.cert}, ContentType: cms.ProtocolContentType(n)})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(der)
	}
	for _, c := range []string{"-aes256", "-aes-256-gcm"} {
		if b := opensslSeed(f, "-encrypt", c, "-recip", "CERT", "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"); b != nil {
			f.Add(b)
		}
	}
}

func FuzzParseEnvelope(f *testing.F) {
	envelopeSeeds(f)
	fx := getFixture(f)
	f.Fuzz(func(t *testing.T, der []byte) {
		env, err := cms.ParseEnvelope(der)
		if err != nil {
			return
		}
		_ = env.ContentType()
		for i := range env.Recipients {
			_ = env.Recipients[i].Matches(fx.rsa.cert)
		}
	})
}

func FuzzDecrypt(f *testing.F) {
	envelopeSeeds(f)
	fx := getFixture(f)
	f.Fuzz(func(t *testing.T, der []byte) {
		_, _, _ = cms.Decrypt(der, fx.rsa.cert, fx.rsa.decrypter())
		_, _, _ = cms.DecryptAgree(t.Context(), der, fx.p256.cert, agreer(fx.p256))
	})
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}
