package cms_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/setpay/setpay/internal/testenv"
)

// party is a certificate with its software key. The CMS layer is
// key-agnostic (crypto.Signer / crypto.Decrypter), so software keys
// exercise the same code paths as token keys.
type party struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func (p party) decrypter() crypto.Decrypter { return p.key.(crypto.Decrypter) }

type fixture struct {
	root     party
	rsa      party // RSA-2048, signing and key exchange
	rsa2     party // second RSA recipient
	p256     party
	p384     party
	impostor party // same issuer and serial as p256, different key
}

var (
	fixOnce sync.Once
	fix     *fixture
	fixErr  error
)

var testNow = time.Date(2026, 3, 14, 15, 9, 26, 0, time.UTC)

// getFixture builds a tiny CA and leaf certificates once per test binary;
// RSA key generation is the slow part.
func getFixture(t testing.TB) *fixture {
	t.Helper()
	fixOnce.Do(func() { fix, fixErr = buildFixture() })
	require.NoError(t, fixErr)
	return fix
}

func buildFixture() (*fixture, error) {
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	rootTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "cms test root", Organization: []string{"setpay"}},
		NotBefore:             testNow.Add(-24 * time.Hour),
		NotAfter:              testNow.Add(10 * 365 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, rootKey.Public(), rootKey)
	if err != nil {
		return nil, err
	}
	rootCert, err := x509.ParseCertificate(rootDER)
	if err != nil {
		return nil, err
	}
	f := &fixture{root: party{rootCert, rootKey}}
	leaf := func(cn string, serial int64, key crypto.Signer) (party, error) {
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn, Organization: []string{"setpay"}},
			NotBefore:    testNow.Add(-time.Hour),
			// OpenSSL checks validity against the real clock.
			NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
			// Go only derives a subjectKeyIdentifier for CA certificates.
			SubjectKeyId: big.NewInt(serial*1000 + int64(len(cn))).Bytes(),
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, rootCert, key.Public(), rootKey)
		if err != nil {
			return party{}, err
		}
		c, err := x509.ParseCertificate(der)
		return party{c, key}, err
	}
	mk := []struct {
		dst    *party
		cn     string
		serial int64
		gen    func() (crypto.Signer, error)
	}{
		{&f.rsa, "rsa leaf", 10, func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) }},
		{&f.rsa2, "rsa leaf 2", 11, func() (crypto.Signer, error) { return rsa.GenerateKey(rand.Reader, 2048) }},
		{&f.p256, "p256 leaf", 12, func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }},
		{&f.p384, "p384 leaf", 13, func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) }},
		{&f.impostor, "p256 leaf", 12, func() (crypto.Signer, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }},
	}
	for _, m := range mk {
		k, err := m.gen()
		if err != nil {
			return nil, err
		}
		if *m.dst, err = leaf(m.cn, m.serial, k); err != nil {
			return nil, err
		}
	}
	return f, nil
}

// openssl returns the openssl binary or skips the test.
func openssl(t *testing.T) string {
	t.Helper()
	p := testenv.Tool(t, "openssl")
	return p
}

// runOpenSSL runs openssl in dir and fails the test on error.
func runOpenSSL(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := tryOpenSSL(t, dir, args...)
	require.NoError(t, err, "openssl %v:\n%s", args, out)
	return out
}

func tryOpenSSL(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), openssl(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, data, 0o600))
	return p
}

func writeCertPEM(t *testing.T, dir, name string, certs ...*x509.Certificate) string {
	t.Helper()
	var buf []byte
	for _, c := range certs {
		buf = append(buf, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return writeFile(t, dir, name, buf)
}

func writeKeyPEM(t *testing.T, dir, name string, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	require.NoError(t, err)
	return writeFile(t, dir, name, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	require.NoError(t, err)
	return b
}
