package pki

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync"
	"time"
)

// CRLFetcher yields the current CRLs of some CAs: a PEM bundle on disk, the CA
// service's GetCRL, ... It need not be trusted: the refresher checks every CRL's
// signature against a known CA certificate before it replaces the one held. A
// fetcher may return some CRLs together with an error for the rest.
type CRLFetcher interface {
	FetchCRLs(ctx context.Context) ([]*x509.RevocationList, error)
	// String says where the CRLs come from, for logs and errors.
	String() string
}

// CRLFiles fetches CRLs from PEM files, read again on every fetch (so a file the
// CA rewrote, or an operator replaced, is picked up on the next refresh).
type CRLFiles []string

// FetchCRLs reads every "X509 CRL" block of every file.
func (f CRLFiles) FetchCRLs(ctx context.Context) ([]*x509.RevocationList, error) {
	var out []*x509.RevocationList
	for _, path := range f {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		crls, err := ReadCRLFile(path)
		if err != nil {
			return nil, err
		}
		out = append(out, crls...)
	}
	return out, nil
}

func (f CRLFiles) String() string { return fmt.Sprintf("files %v", []string(f)) }

// ReadCRLFile parses every CRL of a PEM file; a file without one is an error, so a
// wrong path in a configuration does not read as "nothing revoked".
func ReadCRLFile(path string) ([]*x509.RevocationList, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("pki: read CRLs: %w", err)
	}
	var out []*x509.RevocationList
	for {
		var blk *pem.Block
		if blk, b = pem.Decode(b); blk == nil {
			break
		}
		if blk.Type != "X509 CRL" {
			continue
		}
		crl, err := x509.ParseRevocationList(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: %s: CRL %d: %w", path, len(out)+1, err)
		}
		out = append(out, crl)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("pki: %s holds no PEM \"X509 CRL\" block", path)
	}
	return out, nil
}

// DefaultCRLRefresh is how often a CRLRefresher fetches when its configuration
// leaves Interval zero.
const DefaultCRLRefresh = 5 * time.Minute

// CRLRefresherConfig configures a CRLRefresher.
type CRLRefresherConfig struct {
	// Into is the CRL source the service's Verifier reads.
	Into *MemoryCRLs
	// Issuers are the CA certificates whose CRLs are accepted; a CRL of anyone
	// else, or one whose signature does not verify, is refused and the held CRL
	// kept.
	Issuers []*x509.Certificate
	// Sources are asked in order on every refresh.
	Sources []CRLFetcher
	// Interval between refreshes; zero means DefaultCRLRefresh.
	Interval time.Duration
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// CRLStatus is what a refresher knows of one CA's CRL, for metrics and logs.
type CRLStatus struct {
	Issuer     string // the CA's subject
	Number     string // CRL number held ("" before the first)
	ThisUpdate time.Time
	NextUpdate time.Time
	// LastChange is when a newer CRL replaced the held one.
	LastChange time.Time
}

// CRLRefresher keeps a service's CRLs current while it runs: it fetches from its
// sources every interval and whenever Trigger is called (SIGHUP, say), accepts a
// CRL only if a known CA signed it and it is newer than the one held, and keeps
// serving on the last good CRL while sources fail. The Verifier then refuses a
// revoked certificate from the first refresh after its CRL was published, and
// refuses everything of a CA only once that CA's last good CRL has passed its
// nextUpdate.
type CRLRefresher struct {
	cfg     CRLRefresherConfig
	trigger chan struct{}

	mu        sync.Mutex
	status    map[string]*CRLStatus // by crlKey of the issuer
	lastFetch time.Time             // end of the last refresh where every source answered
	lastErr   error
}

// NewCRLRefresher checks the configuration; it fetches nothing until Refresh or Run.
func NewCRLRefresher(cfg CRLRefresherConfig) (*CRLRefresher, error) {
	var errs []error
	if cfg.Into == nil {
		errs = append(errs, errors.New("into: no CRL store"))
	}
	if len(cfg.Issuers) == 0 {
		errs = append(errs, errors.New("issuers: no CA certificate to check CRLs against"))
	}
	for i, c := range cfg.Issuers {
		if c == nil || !c.IsCA {
			errs = append(errs, fmt.Errorf("issuers[%d]: not a CA certificate", i))
		}
	}
	if len(cfg.Sources) == 0 {
		errs = append(errs, errors.New("sources: nowhere to fetch CRLs from"))
	}
	if cfg.Interval < 0 {
		errs = append(errs, fmt.Errorf("interval: %s is negative", cfg.Interval))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("pki: CRL refresher: %w", err)
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultCRLRefresh
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r := &CRLRefresher{cfg: cfg, trigger: make(chan struct{}, 1), status: map[string]*CRLStatus{}}
	for _, c := range cfg.Issuers {
		k := crlKey(c.RawSubject, c.SubjectKeyId)
		r.status[k] = &CRLStatus{Issuer: c.Subject.String()}
		if held, err := cfg.Into.CRL(context.Background(), c); err == nil {
			r.noteHeld(k, held, time.Time{})
		}
	}
	return r, nil
}

// Interval is the time between refreshes.
func (r *CRLRefresher) Interval() time.Duration { return r.cfg.Interval }

// Refresh asks every source once and installs every CRL that is newer than the one
// held. It returns the sources' and the refused CRLs' errors joined; CRLs that were
// fine are installed either way.
func (r *CRLRefresher) Refresh(ctx context.Context) error {
	var errs []error
	fetched := 0
	for _, src := range r.cfg.Sources {
		// A source may answer in part (one CA unreachable): what it did return is
		// installed all the same.
		crls, err := src.FetchCRLs(ctx)
		for _, crl := range crls {
			if err := r.offer(crl); err != nil {
				errs = append(errs, fmt.Errorf("CRL from %s: %w", src, err))
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("fetch CRLs from %s: %w", src, err))
			continue
		}
		fetched++
	}
	err := errors.Join(errs...)
	r.mu.Lock()
	if fetched == len(r.cfg.Sources) {
		r.lastFetch = r.cfg.Now()
	}
	r.lastErr = err
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("pki: CRL refresh: %w", err)
	}
	return nil
}

// offer installs crl if a known CA signed it and it is newer than the one held.
func (r *CRLRefresher) offer(crl *x509.RevocationList) error {
	issuer := r.issuerOf(crl)
	if issuer == nil {
		return fmt.Errorf("issued by %q, which is none of this service's CAs", crl.Issuer.String())
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("%q: signature: %w", issuer.Subject.String(), err)
	}
	if crl.Number == nil {
		return fmt.Errorf("%q: CRL without number", issuer.Subject.String())
	}
	held, err := r.cfg.Into.CRL(context.Background(), issuer)
	if err == nil {
		switch c := held.Number.Cmp(crl.Number); {
		case c > 0:
			return nil // an older CRL from a source that lags: keep the newer one
		case c == 0:
			if bytes.Equal(held.Raw, crl.Raw) {
				return nil // unchanged
			}
			return fmt.Errorf("%q: CRL number %s signed twice with different contents", issuer.Subject.String(), crl.Number)
		}
	}
	if err := r.cfg.Into.Put(crl); err != nil {
		return err
	}
	now := r.cfg.Now()
	r.noteHeld(crlKey(issuer.RawSubject, issuer.SubjectKeyId), crl, now)
	r.cfg.Logger.Info("CRL updated", "issuer", issuer.Subject.String(), "number", crl.Number.String(),
		"entries", len(crl.RevokedCertificateEntries), "next_update", crl.NextUpdate.UTC().Format(time.RFC3339))
	return nil
}

func (r *CRLRefresher) noteHeld(k string, crl *x509.RevocationList, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.status[k]
	s.Number, s.ThisUpdate, s.NextUpdate = crl.Number.String(), crl.ThisUpdate, crl.NextUpdate
	if !at.IsZero() {
		s.LastChange = at
	}
}

func (r *CRLRefresher) issuerOf(crl *x509.RevocationList) *x509.Certificate {
	for _, c := range r.cfg.Issuers {
		if !bytes.Equal(crl.RawIssuer, c.RawSubject) {
			continue
		}
		if len(crl.AuthorityKeyId) > 0 && len(c.SubjectKeyId) > 0 && !bytes.Equal(crl.AuthorityKeyId, c.SubjectKeyId) {
			continue
		}
		return c
	}
	return nil
}

// Trigger asks Run for a refresh now (it does not wait for it). Calls while one is
// pending are merged.
func (r *CRLRefresher) Trigger() {
	select {
	case r.trigger <- struct{}{}:
	default:
	}
}

// Run refreshes every interval and on every Trigger until ctx ends (a service calls
// Refresh once itself first, so it does not start without CRLs). Failures are logged
// with the source and kept for Status; the held CRLs stay.
func (r *CRLRefresher) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.trigger:
		}
		if err := r.Refresh(ctx); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("CRL refresh failed; serving on the CRLs held", "err", err, "next_try", r.cfg.Interval.String())
		}
		for _, s := range r.Status() {
			if !s.NextUpdate.IsZero() && r.cfg.Now().After(s.NextUpdate) {
				r.cfg.Logger.Error("CRL expired: certificates of this CA are refused until a fresh CRL arrives", "issuer", s.Issuer, "next_update", s.NextUpdate.UTC().Format(time.RFC3339))
			}
		}
	}
}

// Status returns what is held per CA, in issuer order, and when every source last
// answered (zero if never) with the last refresh's error.
func (r *CRLRefresher) Status() []CRLStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]CRLStatus, 0, len(r.status))
	for _, s := range r.status {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Issuer < out[j].Issuer })
	return out
}

// LastFetch is when every source last answered, and the last refresh's error.
func (r *CRLRefresher) LastFetch() (time.Time, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastFetch, r.lastErr
}
