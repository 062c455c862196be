package main

import (
	"context"
	"crypto/x509"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/setpay/setpay/pki"
)

// startCRLs loads the configured CRL files into crls once (a service does not start
// without them) and returns the refresher that keeps them current; runCRLs runs it.
// issuers are the CA certificates the service knows: only CRLs they signed are taken.
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
	for _, ca := range issuers {
		if ca.IsCA {
			cas = append(cas, ca)
		}
	}
	r, err := pki.NewCRLRefresher(pki.CRLRefresherConfig{Into: crls, Issuers: cas, Sources: []pki.CRLFetcher{pki.CRLFiles(c.CRLs)},
		Interval: every, Logger: env.logger})
	if err != nil {
		return nil, fmt.Errorf("crls: %w", err)
	}
	if err := r.Refresh(ctx); err != nil {
		return nil, fmt.Errorf("crls: %w", err)
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
				env.logger.Info("SIGHUP: reading the CRL files again")
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
