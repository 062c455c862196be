package main

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/pki"
)

// The TLS certificates the services need come from the CA's TLS CA (tls-ca.pem, its
// key in the CA token): `setpay tls request` makes the key in the service's token and a
// CSR it signs; `setpay ca tls-issue` certifies it for one use, server or client.

// runTLSRequest makes (or finds again) an ECDSA P-256 signing key labelled --label in
// the token and writes a PKCS#10 request signed by it.
func runTLSRequest(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay tls request", env)
	tf := tokenFlagsOn(fs)
	label := fs.String("label", "", "key label (CKA_LABEL) of the TLS key in the token: made if absent, reused if present")
	names := fs.String("name", "", "comma-separated DNS names or IP addresses; the first is the subject CN and may be a party's name such as merchant:shop-1 (client certificates)")
	out := fs.String("out", "", "file to write the PEM CSR to (default <label>.csr; never overwritten without --force)")
	force := fs.Bool("force", false, "replace --out if it exists")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *label == "" {
		return usageErrorf("--label is required")
	}
	list, err := parseTLSNames(*names)
	if err != nil {
		return usageErrorf("--name: %w", err)
	}
	if *out == "" {
		*out = *label + ".csr"
	}
	if err := checkNewFile(*out, *force); err != nil {
		return err
	}
	mod, tok, err := tf.open(ctx, env)
	if err != nil {
		return err
	}
	defer mod.Close()
	defer tok.Close()
	key, made, err := tlsKey(ctx, tok, *label)
	if err != nil {
		return err
	}
	tmpl := &x509.CertificateRequest{Subject: pkix.Name{CommonName: list[0]}}
	for i, n := range list {
		switch ip := net.ParseIP(n); {
		case ip != nil:
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		case i == 0 && isEntityName(n):
			// the subject CN only
		default:
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		return fmt.Errorf("CSR signed by %s: %w", key.URI(), err)
	}
	if err := writeFileAtomic(*out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), 0o644, *force); err != nil {
		return err
	}
	verb := "reused"
	if made {
		verb = "made"
	}
	fmt.Fprintf(env.stdout, "TLS key %s (%s); CSR for %s in %s\n", key.URI(), verb, strings.Join(list, ","), *out)
	return nil
}

// tlsKey finds the key labelled label or makes it: an ECDSA P-256 signing key. A key of
// another kind under the label is refused, not replaced.
func tlsKey(ctx context.Context, tok *hsm.Token, label string) (*hsm.Key, bool, error) {
	k, err := tok.FindKey(ctx, label)
	if err == nil {
		if k.Algorithm() != hsm.ECDSAP256 || k.Usage() != hsm.UsageSign {
			return nil, false, fmt.Errorf("--label: key %s is %s for %s, a TLS key must be %s for %s (choose another label)",
				k.URI(), k.Algorithm(), k.Usage(), hsm.ECDSAP256, hsm.UsageSign)
		}
		return k, false, nil
	}
	if !errors.Is(err, hsm.ErrKeyNotFound) {
		return nil, false, err
	}
	k, err = tok.GenerateKey(ctx, hsm.KeySpec{Label: label, Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign})
	if err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// parseTLSNames splits --name into DNS names and IP addresses. The first name may
// instead be a party's name, <role>:<id> (e.g. merchant:shop-1, the name the gateway
// knows a merchant's client certificate by): it becomes the subject CN only, never a
// server name.
func parseTLSNames(s string) ([]string, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("required: one or more DNS names or IP addresses, comma-separated")
	}
	var out []string
	for i, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		switch {
		case net.ParseIP(n) != nil:
		case i == 0 && isEntityName(n):
		default:
			if err := ca.CheckDNSName(n); err != nil {
				return nil, fmt.Errorf("%w (or, first, a party's name such as merchant:shop-1)", err)
			}
		}
		out = append(out, n)
	}
	if len(out) > ca.MaxTLSNames {
		return nil, fmt.Errorf("%d names exceed %d", len(out), ca.MaxTLSNames)
	}
	return out, nil
}

// isEntityName reports whether n is <role>:<id> of an end entity.
func isEntityName(n string) bool {
	roleName, id, ok := strings.Cut(n, ":")
	if !ok {
		return false
	}
	r, err := pki.ParseRole(roleName)
	return err == nil && !r.IsCA() && pki.ValidateEntityID(id) == nil
}

// runCATLSIssue certifies a CSR with the CA's TLS CA for one usage and writes the leaf
// and the TLS CA certificate.
func runCATLSIssue(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay ca tls-issue", env)
	c := caFlagsOn(fs, "ca-dir")
	csrFile := fs.String("csr", "", "file of the PEM CSR (from 'setpay tls request')")
	usageName := fs.String("usage", "", "what the certificate may do, server or client (its one extended key usage)")
	out := fs.String("out", "", "file to write the chain to (leaf, TLS CA); never overwritten without --force")
	validityText := fs.String("validity", "90d", "validity: days (90d) or a Go duration (2160h)")
	force := fs.Bool("force", false, "replace --out if it exists")
	if err := fs.Parse(args); err != nil {
		return err
	}
	usage, err := ca.ParseTLSUsage(*usageName)
	if err != nil {
		return usageErrorf("--usage must be server or client")
	}
	if *csrFile == "" {
		return usageErrorf("--csr is required")
	}
	if *out == "" {
		return usageErrorf("--out is required")
	}
	validity, err := parseValidity(*validityText)
	if err != nil {
		return usageErrorf("--validity: %w", err)
	}
	csrDER, err := readCSR(*csrFile)
	if err != nil {
		return fmt.Errorf("--csr: %w", err)
	}
	if _, err := ca.ParseTLSCSR(csrDER); err != nil {
		return fmt.Errorf("--csr %s: %w", *csrFile, err)
	}
	if err := checkNewFile(*out, *force); err != nil {
		return err
	}
	if _, err := c.defaults(); err != nil {
		return err
	}
	mod, tok, err := c.tf.open(ctx, env)
	if err != nil {
		return err
	}
	defer mod.Close()
	defer tok.Close()
	tlsCA, err := ca.LoadTLSCA(ctx, c.out, tok)
	if err != nil {
		return err
	}
	chain, err := tlsCA.Issue(ca.TLSRequest{CSR: csrDER, Usage: usage, Validity: validity})
	if err != nil {
		return fmt.Errorf("--csr %s: %w", *csrFile, err)
	}
	if err := writeFileAtomic(*out, pki.EncodePEM(chain...), 0o644, *force); err != nil {
		return err
	}
	leaf := chain[0]
	names := append([]string(nil), leaf.DNSNames...)
	for _, ip := range leaf.IPAddresses {
		names = append(names, ip.String())
	}
	env.logger.Info("issued TLS certificate", "usage", usage.String(), "subject", leaf.Subject.CommonName, "serial", leaf.SerialNumber.Text(16))
	fmt.Fprintf(env.stdout, "TLS %s certificate for %q (names %s) serial %s, valid until %s; chain in %s\n", usage, leaf.Subject.CommonName,
		strings.Join(names, ","), leaf.SerialNumber.Text(16), leaf.NotAfter.UTC().Format(time.RFC3339), *out)
	return nil
}

// readCSR reads a PEM (or DER) PKCS#10 request, bounded.
func readCSR(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.Size() > 4*ca.MaxTLSCSRSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, 4*ca.MaxTLSCSRSize)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if blk, _ := pem.Decode(b); blk != nil {
		if blk.Type != "CERTIFICATE REQUEST" && blk.Type != "NEW CERTIFICATE REQUEST" {
			return nil, fmt.Errorf("%s: PEM block %q, want CERTIFICATE REQUEST", path, blk.Type)
		}
		return blk.Bytes, nil
	}
	return b, nil
}

// parseValidity reads "90d" or a Go duration.
func parseValidity(s string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n <= 0 {
			return 0, fmt.Errorf("want a positive number of days such as 90d, got %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("want 90d or a positive Go duration, got %q", s)
	}
	return v, nil
}

// checkNewFile refuses an existing path unless force is set, before any work is done.
func checkNewFile(path string, force bool) error {
	if force {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("--out: %s exists (use --force to replace it)", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("--out: %w", err)
	}
	return nil
}

// writeFileAtomic writes b to path through a temporary file in the same directory, so
// a reader never sees half a file; without force an existing path is refused.
func writeFileAtomic(path string, b []byte, mode os.FileMode, force bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if force {
		return os.Rename(tmp.Name(), path)
	}
	// Link fails if path exists: no overwrite, even in a race with another writer.
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s exists (use --force to replace it)", path)
		}
		return err
	}
	return nil
}
