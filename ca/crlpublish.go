package ca

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/setpay/setpay/pki"
)

// CRLFileName is the file of one CA's CRL in a CA directory: root.crl, mca.crl, ...
func CRLFileName(r pki.Role) string { return r.String() + ".crl" }

// PublishCRLs writes the given CRLs into the CA directory dir, each as
// <role>.crl, then rebuilds the bundle crls.pem (FileCRLs) from the five files: the
// one file a service's `crls:` names. A CRL older than the one already in its file
// (a lower CRL number) does not replace it, so files never go back in time when two
// processes publish. Every file is replaced atomically (temporary file and rename):
// a service reading it meanwhile sees the old CRLs or the new ones. It returns the
// roles whose file it replaced.
func PublishCRLs(dir string, crls map[pki.Role]*x509.RevocationList) ([]pki.Role, error) {
	var written []pki.Role
	for _, r := range hierarchyRoles {
		crl := crls[r]
		if crl == nil {
			continue
		}
		p := filepath.Join(dir, CRLFileName(r))
		if held, err := ReadCRL(p); err == nil && held.Number != nil && crl.Number != nil && held.Number.Cmp(crl.Number) >= 0 {
			continue
		}
		if err := writeFileAtomic(p, pki.EncodeCRLPEM(crl)); err != nil {
			return written, err
		}
		written = append(written, r)
	}
	if _, err := RebuildCRLBundle(dir); err != nil {
		return written, err
	}
	return written, nil
}

// RebuildCRLBundle writes crls.pem from the <role>.crl files of dir (those that
// exist) when it differs from them, and says whether it did.
func RebuildCRLBundle(dir string) (bool, error) {
	var all []*x509.RevocationList
	for _, r := range hierarchyRoles {
		crl, err := ReadCRL(filepath.Join(dir, CRLFileName(r)))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return false, err
		}
		all = append(all, crl)
	}
	if len(all) == 0 {
		return false, fmt.Errorf("ca: %s holds no CRL file", dir)
	}
	b := pki.EncodeCRLPEM(all...)
	p := filepath.Join(dir, FileCRLs)
	if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, b) {
		return false, nil
	}
	return true, writeFileAtomic(p, b)
}

// CRLState is what a CRLPublisher last saw of one CA's CRL.
type CRLState struct {
	Role       pki.Role
	Number     string
	ThisUpdate time.Time
	NextUpdate time.Time
	// Online is false for a CA whose key this process does not hold (the offline
	// root): its CRL cannot be re-signed here.
	Online bool
	Err    error // the last failure to get the CRL, if any
}

// CRLPublisherConfig configures a CRLPublisher.
type CRLPublisherConfig struct {
	Dir    string  // the CA directory
	Server *Server // its CRLs (Server.CurrentCRL) are what the files carry
	Clock  func() time.Time
	Logger *slog.Logger
}

// CRLPublisher keeps the CRL files of a CA directory as current as the CA
// service's GetCRL: on every Publish each online CA's CRL is re-signed once half its
// validity has passed (or when its revocations changed) and written to the files, so
// neither the files nor the RPC carry an expired CRL while the CA runs. A CA whose
// key is offline (the root) cannot be re-signed: Publish warns, from half its
// validity on, when its CRL will expire, and logs an error once it has.
type CRLPublisher struct {
	cfg CRLPublisherConfig

	mu    sync.Mutex
	state map[pki.Role]CRLState
}

// NewCRLPublisher checks cfg.
func NewCRLPublisher(cfg CRLPublisherConfig) (*CRLPublisher, error) {
	if cfg.Dir == "" || cfg.Server == nil {
		return nil, errors.New("ca: CRL publisher needs a directory and a server")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &CRLPublisher{cfg: cfg, state: map[pki.Role]CRLState{}}, nil
}

// Publish gets every CA's current CRL and writes the files that are behind it. It
// returns the errors of the CAs it could not serve, joined; the others are written.
func (p *CRLPublisher) Publish(ctx context.Context) error {
	now := p.cfg.Clock()
	h := p.cfg.Server.cfg.Hierarchy
	got := map[pki.Role]*x509.RevocationList{}
	var errs []error
	for _, r := range hierarchyRoles {
		st := CRLState{Role: r, Online: h.ByRole(r) != nil}
		crl, err := p.cfg.Server.CurrentCRL(ctx, r)
		if err != nil {
			st.Err = err
			errs = append(errs, fmt.Errorf("%s CRL: %w", r, err))
			p.set(st)
			continue
		}
		got[r] = crl
		st.Number, st.ThisUpdate, st.NextUpdate = crl.Number.String(), crl.ThisUpdate, crl.NextUpdate
		p.set(st)
		if st.Online {
			continue
		}
		half := crl.ThisUpdate.Add(crl.NextUpdate.Sub(crl.ThisUpdate) / 2)
		switch {
		case !now.Before(crl.NextUpdate):
			p.cfg.Logger.ErrorContext(ctx, "CRL expired and cannot be re-signed here: the "+r.String()+" key is offline; "+
				"services refuse the whole hierarchy until `setpay ca crl --issuer "+r.String()+"` publishes a new one",
				"ca", r.String(), "next_update", crl.NextUpdate.UTC().Format(time.RFC3339))
		case !now.Before(half):
			p.cfg.Logger.WarnContext(ctx, "CRL will expire and cannot be re-signed here: the "+r.String()+" key is offline; "+
				"run `setpay ca crl --issuer "+r.String()+"` with the root token before then",
				"ca", r.String(), "next_update", crl.NextUpdate.UTC().Format(time.RFC3339), "left", crl.NextUpdate.Sub(now).Round(time.Minute).String())
		}
	}
	written, err := PublishCRLs(p.cfg.Dir, got)
	if err != nil {
		errs = append(errs, err)
	}
	for _, r := range written {
		p.cfg.Logger.InfoContext(ctx, "CRL file written", "ca", r.String(), "number", got[r].Number.String(),
			"next_update", got[r].NextUpdate.UTC().Format(time.RFC3339), "file", filepath.Join(p.cfg.Dir, CRLFileName(r)))
	}
	return errors.Join(errs...)
}

func (p *CRLPublisher) set(st CRLState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.state[st.Role] = st
}

// State returns what the last Publish saw, root first.
func (p *CRLPublisher) State() []CRLState {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []CRLState
	for _, r := range hierarchyRoles {
		if st, ok := p.state[r]; ok {
			out = append(out, st)
		}
	}
	return out
}

// Run publishes every interval until ctx ends, logging failures (the files keep
// what they held).
func (p *CRLPublisher) Run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := p.Publish(ctx); err != nil && ctx.Err() == nil {
			p.cfg.Logger.WarnContext(ctx, "CRL publication failed; files keep their CRLs", "err", err)
		}
	}
}
