//go:build browser

package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBrowserTrustsOnlyThePinnedKey: the harness's chromium accepts an HTTPS page
// whose certificate carries the pinned key (from an issuer it does not know) and
// refuses a page served with another key, so the storefront and console tests reach
// their pages only over the merchant's own TLS key.
func TestBrowserTrustsOnlyThePinnedKey(t *testing.T) {
	page := func(text string) *httptest.Server {
		s := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintf(w, "<!doctype html><title>%s</title><p id=m>%s</p>", text, text)
		}))
		s.TLS = &tls.Config{Certificates: []tls.Certificate{selfSigned(t)}}
		s.StartTLS()
		t.Cleanup(s.Close)
		return s
	}
	pinned, other := page("pinned"), page("other")
	sum := sha256.Sum256(pinned.TLS.Certificates[0].Leaf.RawSubjectPublicKeyInfo)
	ctx := newBrowser(t, base64.StdEncoding.EncodeToString(sum[:]))

	browse(t, ctx, chromedp.Navigate(pinned.URL))
	assert.Equal(t, "pinned", cdpValue(t, ctx, chromedp.Text(chromedp.ID("m"))))

	err := chromedp.Do(ctx, chromedp.Navigate(other.URL))
	require.Error(t, err, "a page with an unpinned key")
	assert.Contains(t, err.Error(), "ERR_CERT")
}

// selfSigned is a fresh P-256 key with a self-signed server certificate for 127.0.0.1.
func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}
