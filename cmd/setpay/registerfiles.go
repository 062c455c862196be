package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/template"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/pki"
)

// What `gateway register` and `merchant register` write into --dir: the party's
// certificates as full chains, the trust it needs (root, every CA certificate, the
// CRLs current at registration) and a ready-to-edit service configuration.
const (
	regFileSign     = "signature.pem"   // signature certificate, issuing CA, brand
	regFileKX       = "keyexchange.pem" // key-exchange certificate, issuing CA, brand
	regFileChain    = "chain.pem"       // issuing CA, brand
	regFileCAChain  = "ca-chain.pem"    // brand, CCA, MCA, PCA: every CA a service meets
	regFileRoot     = "root.pem"
	regFileCRLs     = "crls.pem" // every CA's CRL, fetched from the CA at registration
	regFileTLSCA    = "tls-ca.pem"
	regFileKeys     = "keys.yaml"
	regFileTLSCert  = "tls.pem"        // suggested: from `setpay ca tls-issue --usage server`
	regFileTLSCCert = "client-tls.pem" // suggested (merchant): `setpay ca tls-issue --usage client`
)

// caSet reads the CA certificates (brand, CCA, MCA, PCA) of path, checks each against
// the root (with the CA's CRLs) and adds the issuing chain the CA answered with.
func caSet(ctx context.Context, client *ca.Client, path string, issued []*x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	certs, err := ca.ReadPEMFile(path)
	if err != nil {
		return nil, fmt.Errorf("--ca-chain: %w", err)
	}
	var out []*x509.Certificate
	add := func(c *x509.Certificate) {
		for _, o := range out {
			if o.Equal(c) {
				return
			}
		}
		out = append(out, c)
	}
	for _, c := range append(certs, issued...) {
		r, err := pki.RoleOf(c)
		if err != nil || !r.IsCA() {
			return nil, fmt.Errorf("--ca-chain %s: %q is not a CA certificate", path, c.Subject.CommonName)
		}
		if r == pki.RoleRoot {
			continue
		}
		if _, err := client.Verifier().Verify(ctx, c, append(certs, issued...), pki.Expect{Role: r}, now); err != nil {
			return nil, fmt.Errorf("--ca-chain %s: %s certificate %q: %w", path, r, c.Subject.CommonName, err)
		}
		add(c)
	}
	for _, want := range []pki.Role{pki.RoleBrand, pki.RoleCCA, pki.RoleMCA, pki.RolePCA} {
		if caOfRole(out, want) == nil {
			return nil, fmt.Errorf("--ca-chain %s: no %s certificate (use the CA's chain.pem)", path, want)
		}
	}
	return out, nil
}

func caOfRole(certs []*x509.Certificate, r pki.Role) *x509.Certificate {
	for _, c := range certs {
		if got, err := pki.RoleOf(c); err == nil && got == r {
			return c
		}
	}
	return nil
}

// fetchCRLs asks the CA for every CA's current CRL and checks each against its issuer
// and its dates.
func fetchCRLs(ctx context.Context, client *ca.Client, root *x509.Certificate, cas []*x509.Certificate, now time.Time) ([]*x509.RevocationList, error) {
	var out []*x509.RevocationList
	for _, r := range []pki.Role{pki.RoleRoot, pki.RoleBrand, pki.RoleCCA, pki.RoleMCA, pki.RolePCA} {
		issuer := root
		if r != pki.RoleRoot {
			issuer = caOfRole(cas, r)
		}
		crl, err := client.CRL(ctx, r)
		if err != nil {
			return nil, fmt.Errorf("fetch the %s CRL from the CA: %w", r, err)
		}
		if err := crl.CheckSignatureFrom(issuer); err != nil {
			return nil, fmt.Errorf("%s CRL from the CA: not signed by %q: %w", r, issuer.Subject.CommonName, err)
		}
		if !crl.NextUpdate.IsZero() && now.After(crl.NextUpdate) {
			return nil, fmt.Errorf("%s CRL from the CA expired %s", r, crl.NextUpdate.UTC().Format(time.RFC3339))
		}
		out = append(out, crl)
	}
	return out, nil
}

// regConfig is what the written configuration says; paths relative to --dir.
type regConfig struct {
	Role, ID, Date          string
	Token                   string // label, for the suggested key URIs
	TokenYAML               string // the token keys as given to register
	SignKey, KXKey          string
	TLSKey, ClientTLSKey    string // suggested URIs of the TLS keys `tls request` makes
	TLSLabel, ClientTLSLbl  string
	Store                   string
	CAAddress, CAServerName string // the CA service registered with
	Brand                   string
	TokenFlags              string // the token flags to repeat in the commands the comments suggest
}

// q quotes s as a YAML scalar.
func q(s string) string {
	b, err := yaml.Marshal(s)
	if err != nil {
		return `""`
	}
	return strings.TrimSpace(string(b))
}

var regConfigTemplate = template.Must(template.New("cfg").Funcs(template.FuncMap{"q": q}).Parse(`# {{.Role}}.yaml for {{.Role}} {{.ID}}, written by ` + "`setpay {{.Role}} register`" + ` on {{.Date}}.
# Paths are relative to this file. Fill in what is marked TODO, then:
#   setpay {{.Role}} serve --config {{.Role}}.yaml
# The service checks its own certificates at start (chain to root through ca_chain,
# role {{.Role}}, validity, revocation on crls, keys in the token) and refuses clearly.

# The token holding the {{.Role}}'s keys.
{{.TokenYAML}}
# TODO: the address to serve on (host:port){{if eq .Role "gateway"}}, where merchants reach the gateway{{else}}, where wallets reach the merchant{{end}}.
listen: ""

# The SET identity the CA issued (keys in the token; certificates leaf first, then
# the issuing CA and the brand CA).
sign_key: {{q .SignKey}}
sign_cert: {{q "signature.pem"}}
kx_key: {{q .KXKey}}
kx_cert: {{q "keyexchange.pem"}}

# Trust: the SET root, every CA certificate, and the CAs' CRLs (fetched from the CA at
# registration; read again every crl_refresh and on SIGHUP — keep the file current).
root: {{q "root.pem"}}
ca_chain:
  - {{q "ca-chain.pem"}}
crls:
  - {{q "crls.pem"}}
crl_refresh: "5m"
# The CA service asked for every CA's current CRL at start, every crl_refresh and on
# SIGHUP, so a revocation reaches the running service (crls above covers the start
# while the CA cannot be reached).
crl_ca:
  address: {{q .CAAddress}}
  tls_ca: {{q "tls-ca.pem"}}
{{- if .CAServerName}}
  server_name: {{q .CAServerName}}
{{- end}}

# The {{.Role}}'s database; create it once with
#   setpay store init --store {{.Store}}   (run next to this file)
store: {{q .Store}}

# TLS: the key stays in the token. Make it and its certificate with
#   setpay tls request {{.TokenFlags}} --label {{.TLSLabel}} --name HOST --out {{.TLSLabel}}.csr
#   setpay ca tls-issue --ca-dir CA_DIR --csr {{.TLSLabel}}.csr --usage server --out tls.pem
# (HOST: the DNS name or IP address {{if eq .Role "gateway"}}merchants dial{{else}}wallets dial{{end}}; the CA operator runs tls-issue with the
# CA's token flags.)
tls:
  cert: {{q "tls.pem"}}
  key: {{q .TLSKey}}
{{- if eq .Role "gateway"}}
  # Merchants' client certificates come from the CA's TLS CA.
  client_ca: {{q "tls-ca.pem"}}

# The key of stored PAN hashes, a MAC key in the token; make it once with
#   setpay hsm keygen {{.TokenFlags}} --alg hmac-sha256 --usage mac --label pan-hash
pan_hash_key: {{q (print "pkcs11:token=" .Token ";object=pan-hash;type=secret-key")}}

# The issuer stand-in's cards (test data only; a real gateway has an issuer link):
# ledger_file: cards.yaml
{{- else}}

# The key the merchant derives its purchase challenges from, a MAC key in the token
# (the same for every replica, so purchases in flight survive a restart); make it once with
#   setpay hsm keygen {{.TokenFlags}} --alg hmac-sha256 --usage mac --label merchant-challenge
challenge_key: {{q (print "pkcs11:token=" .Token ";object=merchant-challenge;type=secret-key")}}

# The card brand this merchant accepts.
brand: {{q .Brand}}

# TODO: what the merchant sells, e.g.
#   - {id: book, description: "A book", amount: 1999, currency: EUR, sale: false}
offers: []

# The payment gateway, from its operator.
gateway:
  # TODO: the gateway's address (host:port) and its TLS name (default: the host).
  address: ""
  server_name: ""
  # TODO: the gateway's keyexchange.pem (its key-exchange certificate, PCA, brand).
  kx_cert: ""
  tls_ca: {{q "tls-ca.pem"}}
  # This merchant's client certificate at the gateway (the gateway knows the merchant by
  # its name, {{.Role}}:{{.ID}}), key in the token:
  #   setpay tls request {{.TokenFlags}} --label {{.ClientTLSLbl}} --name {{.Role}}:{{.ID}} --out {{.ClientTLSLbl}}.csr
  #   setpay ca tls-issue --ca-dir CA_DIR --csr {{.ClientTLSLbl}}.csr --usage client --out client-tls.pem
  tls_cert: {{q "client-tls.pem"}}
  tls_key: {{q .ClientTLSKey}}
{{- end}}

# Prometheus /metrics, /healthz and /readyz on their own port (empty: none):
# metrics_listen: "127.0.0.1:9100"
`))

// renderRegConfig writes the configuration text.
func renderRegConfig(c regConfig) ([]byte, error) {
	var b bytes.Buffer
	if err := regConfigTemplate.Execute(&b, c); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// tokenYAML is the token keys of a configuration in dir as register was given them:
// softhsm_dir (which brings the module and the PIN file) or module and pin_source,
// and the token by label, serial or slot. resolved are the flags after their defaults.
func tokenYAML(rec tokenConfig, resolved *tokenFlags) string {
	var b strings.Builder
	line := func(k, v string) { fmt.Fprintf(&b, "%s: %s\n", k, q(v)) }
	if rec.SoftHSMDir != "" {
		b.WriteString("# SoftHSM dev token directory: it names the module, SOFTHSM2_CONF and the PIN file.\n")
		line("softhsm_dir", rec.SoftHSMDir)
		if rec.Module != "" {
			line("module", rec.Module)
		}
	} else {
		line("module", resolved.module)
	}
	switch {
	case rec.TokenSerial != "":
		line("token_serial", rec.TokenSerial)
	case rec.TokenSlot != nil:
		fmt.Fprintf(&b, "token_slot: %d\n", *rec.TokenSlot)
	default:
		line("token", rec.Token)
	}
	if rec.PINSource != "" || rec.SoftHSMDir == "" {
		src := rec.PINSource
		if src == "" {
			src = resolved.pinSource // the default, env:SETPAY_PIN
		}
		b.WriteString("# Where the PIN comes from (env:NAME or file:PATH), never the PIN itself.\n")
		line("pin_source", src)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// tokenFlagsText is the token flags for the commands the comments suggest.
func tokenFlagsText(tf *tokenFlags) string {
	var parts []string
	if tf.given.SoftHSMDir != "" {
		parts = append(parts, "--softhsm-dir "+mustAbs(tf.given.SoftHSMDir))
	} else if tf.given.Module != "" {
		parts = append(parts, "--module "+tf.given.Module)
	}
	switch {
	case tf.given.TokenSerial != "":
		parts = append(parts, "--token-serial "+tf.given.TokenSerial)
	case tf.given.TokenSlot != nil:
		parts = append(parts, fmt.Sprintf("--token-slot %d", *tf.given.TokenSlot))
	default:
		parts = append(parts, "--token "+tf.given.Token)
	}
	if tf.given.PINSource != "" {
		parts = append(parts, "--pin-source "+tf.given.PINSource)
	}
	return strings.Join(parts, " ")
}

// tlsKeyURI is the URI of the key `tls request --label label` makes in token.
func tlsKeyURI(token, label string) string {
	return hsm.URI{Token: token, Object: label, Type: "private"}.String()
}

// writeRegFiles writes the files into dir, each atomically; the configuration goes
// to <name> unless it exists, then to <name>.new, and the name used is returned.
func writeRegFiles(dir string, files map[string][]byte, cfgName string, cfg []byte) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	for name, b := range files {
		if err := writeFileAtomic(filepath.Join(dir, name), b, 0o644, true); err != nil {
			return "", err
		}
	}
	// An edited configuration is never overwritten: the new one goes next to it.
	err := writeFileAtomic(filepath.Join(dir, cfgName), cfg, 0o600, false)
	if err == nil {
		return cfgName, nil
	}
	if _, statErr := os.Lstat(filepath.Join(dir, cfgName)); statErr != nil {
		return "", err
	}
	if err := writeFileAtomic(filepath.Join(dir, cfgName+".new"), cfg, 0o600, true); err != nil {
		return "", err
	}
	return cfgName + ".new", nil
}
