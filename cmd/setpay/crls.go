package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/setpay/setpay/ca"
	"github.com/setpay/setpay/pki"
)

// crlCAConfig is a service's crl_ca: the CA service whose GetCRL it refreshes from.
type crlCAConfig struct {
	Address    string `yaml:"address"`               // host:port of `setpay ca serve`
	TLSCA      string `yaml:"tls_ca"`                // PEM: trust anchor of its TLS certificate (the CA directory's tls-ca.pem)
	ServerName string `yaml:"server_name,omitempty"` // its TLS name; default: the host of address
}

func (k *crlCAConfig) check(c *checks) {
	if *k == (crlCAConfig{}) {
		return
	}
	c.hostPort("crl_ca.address", k.Address)
	c.required("crl_ca.tls_ca", k.TLSCA)
}

// crlFetchTimeout bounds one fetch from the CA service, so a CA that hangs does not
// stall the refresher past its next turn.
const crlFetchTimeout = 30 * time.Second

// timedFetcher bounds each fetch of f.
type timedFetcher struct{ pki.CRLFetcher }

func (f timedFetcher) FetchCRLs(ctx context.Context) ([]*x509.RevocationList, error) {
	ctx, cancel := context.WithTimeout(ctx, crlFetchTimeout)
	defer cancel()
	return f.CRLFetcher.FetchCRLs(ctx)
}

// dialCRLCA connects to the CA service of crl_ca (TLS 1.3, server authentication
// against tls_ca) and returns its CRLs as a fetcher; the connection closes when ctx
// ends.
func dialCRLCA(ctx context.Context, k crlCAConfig, root *x509.Certificate) (pki.CRLFetcher, error) {
	anchors, err := readPEMCerts(k.TLSCA)
	if err != nil {
		return nil, fmt.Errorf("crl_ca.tls_ca: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range anchors {
		pool.AddCert(c)
	}
	name := k.ServerName
	if name == "" {
		host, _, err := net.SplitHostPort(k.Address)
		if err != nil {
			return nil, fmt.Errorf("crl_ca.address: %w", err)
		}
		name = host
	}
	conn, err := grpc.NewClient(k.Address, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: name})),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(4<<20)))
	if err != nil {
		return nil, fmt.Errorf("crl_ca.address: %w", err)
	}
	client, err := ca.NewClient(conn, root, nil)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("crl_ca: %w", err)
	}
	context.AfterFunc(ctx, func() { _ = conn.Close() })
	return timedFetcher{client.CRLFetcher(k.Address)}, nil
}

// startCRLs loads the CRLs of the configured sources (crls files, the crl_ca service)
// into crls once and returns the refresher that keeps them current; runCRLs runs it.
// A service does not start without a CRL for every CA it knows; a source that fails
// while the others cover every CA is logged and tried again on the next refresh.
// issuers are the CA certificates the service knows (the root among them): only CRLs
// they signed are taken.
func startCRLs(ctx context.Context, env *cliEnv, crls *pki.MemoryCRLs, c *partyConfig, issuers []*x509.Certificate) (*pki.CRLRefresher, error) {
	every := time.Duration(0)
	if c.CRLRefresh != "" {
		d, err := time.ParseDuration(c.CRLRefresh)
		if err != nil || d <= 0 {
			return nil, fmt.Errorf("crl_refresh: want a positive duration such as 5m, got %q", c.CRLRefresh)
		}
		every = d
	}
	var cas []*x509.Certificate
	var root *x509.Certificate
	for _, c := range issuers {
		if !c.IsCA {
			continue
		}
		cas = append(cas, c)
		if r, err := pki.RoleOf(c); err == nil && r == pki.RoleRoot && root == nil {
			root = c
		}
	}
	var sources []pki.CRLFetcher
	if len(c.CRLs) > 0 {
		sources = append(sources, pki.CRLFiles(c.CRLs))
	}
	if c.CRLCA.Address != "" {
		if root == nil {
			return nil, errors.New("crl_ca: no root certificate to check the CA service against")
		}
		f, err := dialCRLCA(ctx, c.CRLCA, root)
		if err != nil {
			return nil, err
		}
		sources = append(sources, f)
	}
	r, err := pki.NewCRLRefresher(pki.CRLRefresherConfig{Into: crls, Issuers: cas, Sources: sources,
		Interval: every, Logger: env.logger})
	if err != nil {
		return nil, fmt.Errorf("crls: %w", err)
	}
	if err := r.Refresh(ctx); err != nil {
		var missing []string
		for _, s := range r.Status() {
			if s.Number == "" {
				missing = append(missing, s.Issuer)
			}
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("crls: no CRL of %v: %w", missing, err)
		}
		env.logger.Warn("CRL source failed at start; serving on the CRLs of the others", "err", err)
	}
	return r, nil
}

// runCRLs refreshes the CRLs every interval and on SIGHUP until ctx ends.
func runCRLs(ctx context.Context, env *cliEnv, r *pki.CRLRefresher) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				env.logger.Info("SIGHUP: reading the CRL files again (and asking crl_ca)")
				r.Trigger()
			}
		}
	}()
	go r.Run(ctx)
}

// crlCollector exposes what the refresher holds: per CA, the CRL's nextUpdate (a CRL
// past it makes the service refuse that CA's certificates) and its number.
type crlCollector struct{ r *pki.CRLRefresher }

var (
	descCRLNextUpdate = prometheus.NewDesc("setpay_crl_next_update_timestamp_seconds",
		"nextUpdate of the CRL held for each CA; after it, certificates of that CA are refused until a newer CRL arrives.", []string{"issuer"}, nil)
	descCRLLastFetch = prometheus.NewDesc("setpay_crl_last_refresh_timestamp_seconds",
		"When every CRL source last answered.", nil, nil)
)

func (c crlCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descCRLNextUpdate
	ch <- descCRLLastFetch
}

func (c crlCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.r.Status() {
		if s.NextUpdate.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descCRLNextUpdate, prometheus.GaugeValue, float64(s.NextUpdate.Unix()), s.Issuer)
	}
	if at, _ := c.r.LastFetch(); !at.IsZero() {
		ch <- prometheus.MustNewConstMetric(descCRLLastFetch, prometheus.GaugeValue, float64(at.Unix()))
	}
}

// certCollector exposes the NotAfter of the service's own certificates.
type certCollector map[string]*x509.Certificate

var descCertNotAfter = prometheus.NewDesc("setpay_certificate_not_after_timestamp_seconds",
	"NotAfter of each certificate the service presents.", []string{"certificate"}, nil)

func (c certCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descCertNotAfter }

func (c certCollector) Collect(ch chan<- prometheus.Metric) {
	for name, cert := range c {
		ch <- prometheus.MustNewConstMetric(descCertNotAfter, prometheus.GaugeValue, float64(cert.NotAfter.Unix()), name)
	}
}

// caCRLCollector exposes, in `ca serve`, the CRL each CA publishes: its nextUpdate and
// whether this process can re-sign it (online="false" for the offline root: alert on
// it well before it passes, and run `setpay ca crl --issuer root`).
type caCRLCollector struct{ p *ca.CRLPublisher }

var descCACRLNextUpdate = prometheus.NewDesc("setpay_ca_crl_next_update_timestamp_seconds",
	"nextUpdate of the CRL the CA service and its CRL files carry for each CA; online=\"false\": the CA's key is offline and this process cannot re-sign it.",
	[]string{"ca", "online"}, nil)

func (c caCRLCollector) Describe(ch chan<- *prometheus.Desc) { ch <- descCACRLNextUpdate }

func (c caCRLCollector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.p.State() {
		if s.NextUpdate.IsZero() {
			continue
		}
		ch <- prometheus.MustNewConstMetric(descCACRLNextUpdate, prometheus.GaugeValue, float64(s.NextUpdate.Unix()),
			s.Role.String(), fmt.Sprint(s.Online))
	}
}
