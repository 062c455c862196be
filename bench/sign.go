package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/ThalesGroup/crypto11"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/internal/tlsrpc"
	"github.com/setpay/setpay/signer"
)

// TokenSpec names a token to benchmark. The PIN is read from PIN (env: or file:), once.
type TokenSpec struct {
	Module string
	Label  string
	PIN    hsm.PINSource
}

// SignConfig configures RunSign.
type SignConfig struct {
	Tokens      []TokenSpec
	Mechanisms  []Mechanism
	Concurrency []int
	Duration    time.Duration // per token × mechanism × concurrency × path
	Rounds      int           // the duration is split into this many interleaved rounds
	Paths       []string      // default: all
	Progress    io.Writer     // progress lines; nil for none
	Logger      *slog.Logger
}

// Result is one row of the report; the JSON field names are the published format.
type Result struct {
	Token       string  `json:"token"`
	Mechanism   string  `json:"mechanism"`
	Path        string  `json:"path"`
	Concurrency int     `json:"concurrency"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
	Errors      int     `json:"errors,omitempty"`
}

// Report is the outcome of a run.
type Report struct {
	Results []Result `json:"results"`
}

// target is one opened token with every path's handle on it.
type target struct {
	spec   TokenSpec
	mod    *hsm.Module
	tok    *hsm.Token
	c11    *crypto11.Context
	keys   []*keyset
	svc    *signer.Service
	client *signer.Client
	close  []func()
}

// RunSign measures every path for every token, mechanism and concurrency. Paths run
// interleaved in rounds, so drift on a noisy machine spreads over all of them alike.
func RunSign(ctx context.Context, cfg SignConfig) (*Report, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.Rounds <= 0 {
		cfg.Rounds = 5
	}
	if len(cfg.Paths) == 0 {
		cfg.Paths = Paths
	}
	if len(cfg.Tokens) == 0 || len(cfg.Mechanisms) == 0 || len(cfg.Concurrency) == 0 || cfg.Duration <= 0 {
		return nil, errors.New("bench: tokens, mechanisms, concurrency and a positive duration are required")
	}
	maxConc := slices.Max(cfg.Concurrency)
	mods := map[string]*hsm.Module{}
	var targets []*target
	defer func() {
		for _, t := range targets {
			t.shutdown(ctx)
		}
		for _, m := range mods {
			_ = m.Close()
		}
		// crypto11 finalises the library when its last context closes, so it goes last.
		for _, t := range targets {
			if t.c11 != nil {
				_ = t.c11.Close()
			}
		}
	}()
	for _, spec := range cfg.Tokens {
		t, err := openTarget(ctx, spec, cfg, mods, maxConc)
		if t != nil {
			targets = append(targets, t)
		}
		if err != nil {
			return nil, err
		}
	}
	rep := &Report{}
	steps := len(targets) * len(cfg.Mechanisms) * len(cfg.Concurrency)
	step := 0
	for _, t := range targets {
		for _, ks := range t.keys {
			for _, conc := range cfg.Concurrency {
				step++
				rows, err := measure(ctx, t, ks, conc, cfg)
				if err != nil {
					return nil, err
				}
				if cfg.Progress != nil {
					var parts []string
					for _, r := range rows {
						parts = append(parts, fmt.Sprintf("%s %.0f/s", r.Path, r.OpsPerSec))
					}
					fmt.Fprintf(cfg.Progress, "[%d/%d] %s %s c=%d: %s\n", step, steps, t.spec.Label, ks.mech.Name, conc, strings.Join(parts, ", "))
				}
				rep.Results = append(rep.Results, rows...)
			}
		}
	}
	return rep, nil
}

func openTarget(ctx context.Context, spec TokenSpec, cfg SignConfig, mods map[string]*hsm.Module, maxConc int) (*target, error) {
	pin, err := spec.PIN.Resolve()
	if err != nil {
		return nil, err
	}
	t := &target{spec: spec}
	want := func(p string) bool { return slices.Contains(cfg.Paths, p) }
	if want(PathCrypto11) {
		// crypto11 must initialise the library before anything else in the process does,
		// or its C_Initialize fails; our Module then shares the initialised library.
		t.c11, err = crypto11.Configure(&crypto11.Config{Path: spec.Module, TokenLabel: spec.Label, Pin: pin})
		if err != nil {
			return nil, fmt.Errorf("bench: crypto11 on token %q: %w", spec.Label, err)
		}
	}
	mod, ok := mods[spec.Module]
	if !ok {
		if mod, err = hsm.OpenModule(spec.Module, cfg.Logger); err != nil {
			return t, err
		}
		mods[spec.Module] = mod
	}
	t.mod = mod
	if t.tok, err = mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: spec.Label}, PIN: spec.PIN, MaxSessions: maxConc + 4, Logger: cfg.Logger}); err != nil {
		return t, err
	}
	t.svc = signer.NewService()
	for _, m := range cfg.Mechanisms {
		ks, err := t.addKey(ctx, m)
		if err != nil {
			return t, err
		}
		t.keys = append(t.keys, ks)
	}
	if want(PathGRPC) {
		if err := t.startGRPC(ctx); err != nil {
			return t, err
		}
		for _, ks := range t.keys {
			if ks.mech.Kind == "derive" {
				continue
			}
			if ks.remote, err = t.client.Key(ctx, ks.name); err != nil {
				return t, err
			}
		}
	}
	return t, nil
}

const benchPrefix = "setpay-bench-"

// generate makes a fresh benchmark key, replacing one a previous run left behind.
func (t *target) generate(ctx context.Context, label string, alg hsm.Algorithm, usage hsm.Usage) (*hsm.Key, error) {
	if old, err := t.tok.FindKey(ctx, label); err == nil {
		if err := t.tok.DeleteKey(ctx, old); err != nil {
			return nil, err
		}
	}
	k, err := t.tok.GenerateKey(ctx, hsm.KeySpec{Label: label, Algorithm: alg, Usage: usage})
	if err != nil {
		return nil, err
	}
	t.close = append(t.close, func() { _ = t.tok.DeleteKey(context.Background(), k) })
	return k, nil
}

func (t *target) addKey(ctx context.Context, m Mechanism) (*keyset, error) {
	name := benchPrefix + m.Name
	key, err := t.generate(ctx, name, m.Alg, m.Usage)
	if err != nil {
		return nil, fmt.Errorf("bench: key for %s on %q: %w", m.Name, t.spec.Label, err)
	}
	ks := &keyset{mech: m, name: name, key: key, svc: t.svc}
	if err := t.svc.Add(signer.Entry{Name: name, Key: key, Algorithm: string(m.Alg), Usage: string(m.Usage)}); err != nil {
		return nil, err
	}
	if t.c11 != nil && m.Kind != "derive" {
		if ks.c11, err = t.c11.FindKeyPair(key.ID(), nil); err != nil || ks.c11 == nil {
			return nil, fmt.Errorf("bench: crypto11 cannot find %s: %v", name, err)
		}
	}
	if ks.software, err = newSoftware(m); err != nil {
		return nil, err
	}
	if ks.in, err = newInput(m, key.Public()); err != nil {
		return nil, err
	}
	return ks, nil
}

// startGRPC serves the token's keys over gRPC on loopback with mutual TLS; the TLS keys
// live in the same token, as they would in production.
func (t *target) startGRPC(ctx context.Context) error {
	caKey, err := t.generate(ctx, benchPrefix+"tls-ca", hsm.ECDSAP256, hsm.UsageSign)
	if err != nil {
		return err
	}
	issuer, err := tlsrpc.NewTLSIssuer("setpay bench TLS CA", caKey, time.Hour)
	if err != nil {
		return err
	}
	srvKey, err := t.generate(ctx, benchPrefix+"tls-server", hsm.ECDSAP256, hsm.UsageSign)
	if err != nil {
		return err
	}
	srvID, err := issuer.Issue("127.0.0.1", srvKey, time.Hour)
	if err != nil {
		return err
	}
	cliKey, err := t.generate(ctx, benchPrefix+"tls-client", hsm.ECDSAP256, hsm.UsageSign)
	if err != nil {
		return err
	}
	cliID, err := issuer.Issue("bench", cliKey, time.Hour)
	if err != nil {
		return err
	}
	gs, _ := tlsrpc.NewGRPCServer(tlsrpc.ServerTLS(srvID, issuer.Pool()), 0)
	signer.NewServer(t.svc, signer.Grants{"bench": {"*"}}, signer.Limits{}, nil).Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("bench: listen: %w", err)
	}
	go func() { _ = gs.Serve(lis) }()
	tlsCfg := tlsrpc.ClientTLS(&cliID, issuer.Pool(), "127.0.0.1")
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	if err != nil {
		gs.Stop()
		return err
	}
	t.client = signer.NewClient(conn, signer.ClientOptions{Pipeline: true})
	t.close = append(t.close, func() { _ = t.client.Close(); _ = conn.Close(); gs.Stop() })
	return nil
}

func (t *target) shutdown(context.Context) {
	for i := len(t.close) - 1; i >= 0; i-- {
		t.close[i]()
	}
	if t.tok != nil {
		_ = t.tok.Close()
	}
}

// measure runs every path at one concurrency, interleaved over cfg.Rounds rounds.
func measure(ctx context.Context, t *target, ks *keyset, conc int, cfg SignConfig) ([]Result, error) {
	slice := cfg.Duration / time.Duration(cfg.Rounds)
	type acc struct {
		rates []float64
		lat   []time.Duration
		errs  int
		na    bool
	}
	accs := map[string]*acc{}
	for round := 0; round < cfg.Rounds; round++ {
		// Odd rounds run the paths in reverse, so no path always follows the same one.
		order := slices.Clone(cfg.Paths)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, p := range order {
			a := accs[p]
			if a == nil {
				a = &acc{}
				accs[p] = a
			}
			if a.na {
				continue
			}
			n, lat, errs, err := runPath(ctx, t, ks, p, conc, slice)
			if errors.Is(err, errNotApplicable) {
				a.na = true
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("bench: %s %s on %q: %w", p, ks.mech.Name, t.spec.Label, err)
			}
			a.rates = append(a.rates, float64(n)/slice.Seconds())
			a.lat = append(a.lat, lat...)
			a.errs += errs
		}
	}
	var out []Result
	for _, p := range cfg.Paths {
		a := accs[p]
		if a == nil || a.na || len(a.rates) == 0 {
			continue
		}
		sort.Float64s(a.rates)
		slices.Sort(a.lat)
		out = append(out, Result{
			Token: t.spec.Label, Mechanism: ks.mech.Name, Path: p, Concurrency: conc,
			OpsPerSec: a.rates[len(a.rates)/2], // median of rounds
			P50us:     quantile(a.lat, 0.50), P99us: quantile(a.lat, 0.99), Errors: a.errs,
		})
	}
	return out, nil
}

func quantile(sorted []time.Duration, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q * float64(len(sorted)-1))
	return float64(sorted[i].Nanoseconds()) / 1e3
}

// runPath runs conc workers on path for d after a short warm-up; it returns the
// operations completed, every latency, and the number of failed operations.
func runPath(ctx context.Context, t *target, ks *keyset, path string, conc int, d time.Duration) (int, []time.Duration, int, error) {
	ops := make([]op, conc)
	closers := make([]func(), conc)
	defer func() {
		for _, c := range closers {
			if c != nil {
				c()
			}
		}
	}()
	for i := range conc {
		o, c, err := ks.newOp(path, t.mod, t.tok.Info().Slot)
		closers[i] = c
		if err != nil {
			return 0, nil, 0, err
		}
		ops[i] = o
	}
	// Warm up: sessions open, the TLS stream starts, caches fill.
	for _, o := range ops {
		if err := o(ctx); err != nil {
			return 0, nil, 0, fmt.Errorf("warm-up: %w", err)
		}
	}
	lats := make([][]time.Duration, conc)
	errs := make([]int, conc)
	var wg sync.WaitGroup
	start := make(chan struct{})
	var deadline time.Time
	for i := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := make([]time.Duration, 0, 4096)
			<-start
			for {
				t0 := time.Now()
				if !t0.Before(deadline) {
					break
				}
				if err := ops[i](ctx); err != nil {
					errs[i]++
					if errs[i] > 100 {
						break
					}
					continue
				}
				l = append(l, time.Since(t0))
			}
			lats[i] = l
		}()
	}
	deadline = time.Now().Add(d)
	close(start)
	wg.Wait()
	var all []time.Duration
	nerr := 0
	for i := range conc {
		all = append(all, lats[i]...)
		nerr += errs[i]
	}
	if nerr > 100 {
		return 0, nil, nerr, fmt.Errorf("%d operations failed", nerr)
	}
	return len(all), all, nerr, nil
}

// WriteTable prints the report with each path's ratio to raw PKCS#11.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "token\tmechanism\tconc\tpath\tops/s\tp50 µs\tp99 µs\tvs raw\t")
	raw := map[string]float64{}
	for _, x := range r.Results {
		if x.Path == PathRaw {
			raw[fmt.Sprintf("%s|%s|%d", x.Token, x.Mechanism, x.Concurrency)] = x.OpsPerSec
		}
	}
	for _, x := range r.Results {
		ratio := "-"
		if base := raw[fmt.Sprintf("%s|%s|%d", x.Token, x.Mechanism, x.Concurrency)]; base > 0 {
			ratio = fmt.Sprintf("%.1f%%", 100*x.OpsPerSec/base)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%.0f\t%.0f\t%.0f\t%s\t\n", x.Token, x.Mechanism, x.Concurrency, x.Path, x.OpsPerSec, x.P50us, x.P99us, ratio)
	}
	return tw.Flush()
}

// Summary is, per token and mechanism, the lowest ratio of the in-process signer to raw
// over all concurrencies, and the ratio of gRPC to the in-process signer at the highest.
type Summary struct {
	Token, Mechanism  string
	SignerVsRawMin    float64 // 0 when either path is missing
	GRPCVsSigner      float64
	HighestConcurrent int
}

// Summaries computes the ratios users check first.
func (r *Report) Summaries() []Summary {
	type key struct{ tok, mech string }
	by := map[key]map[string]map[int]float64{}
	var order []key
	for _, x := range r.Results {
		k := key{x.Token, x.Mechanism}
		if by[k] == nil {
			by[k] = map[string]map[int]float64{}
			order = append(order, k)
		}
		if by[k][x.Path] == nil {
			by[k][x.Path] = map[int]float64{}
		}
		by[k][x.Path][x.Concurrency] = x.OpsPerSec
	}
	var out []Summary
	for _, k := range order {
		s := Summary{Token: k.tok, Mechanism: k.mech}
		raw, sig, grpc := by[k][PathRaw], by[k][PathSigner], by[k][PathGRPC]
		for c, v := range sig {
			if raw[c] > 0 && (s.SignerVsRawMin == 0 || v/raw[c] < s.SignerVsRawMin) {
				s.SignerVsRawMin = v / raw[c]
			}
			if c > s.HighestConcurrent {
				s.HighestConcurrent = c
			}
		}
		if c := s.HighestConcurrent; sig[c] > 0 && grpc[c] > 0 {
			s.GRPCVsSigner = grpc[c] / sig[c]
		}
		out = append(out, s)
	}
	return out
}

// WriteSummary prints Summaries under the table.
func (r *Report) WriteSummary(w io.Writer) {
	for _, s := range r.Summaries() {
		fmt.Fprintf(w, "%s %s: signer/raw ≥ %.1f%% at every concurrency; grpc/signer %.1f%% at concurrency %d\n",
			s.Token, s.Mechanism, 100*s.SignerVsRawMin, 100*s.GRPCVsSigner, s.HighestConcurrent)
	}
}

// WriteJSON writes the report to path.
func (r *Report) WriteJSON(path string) error { return writeJSON(path, r) }

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("bench: write %s: %w", path, err)
	}
	return nil
}
