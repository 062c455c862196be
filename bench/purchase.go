package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc/status"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/merchant"
	"github.com/setpay/setpay/setproto"
	"github.com/setpay/setpay/signer"
	"github.com/setpay/setpay/softhsm"
	"github.com/setpay/setpay/system"
	"github.com/setpay/setpay/wallet"
)

// PurchaseConfig configures RunPurchase.
type PurchaseConfig struct {
	Concurrency []int
	Duration    time.Duration // per concurrency
	// StoreDSN is where the gateway and the merchant keep their records: "" for SQLite
	// files in a temporary directory, or a postgres:// DSN (both parties share it).
	StoreDSN string
	Progress io.Writer
	Logger   *slog.Logger
	// PurchasesDone, if set, runs after the last purchase, before the token rates
	// are measured: the CLI stops its CPU profile there so the profile shows purchases only.
	PurchasesDone func()
}

// StepStats are latency quantiles of one step of a purchase, in microseconds.
type StepStats struct {
	P50us float64 `json:"p50_us"`
	P95us float64 `json:"p95_us"`
	P99us float64 `json:"p99_us"`
}

// PurchaseResult is one concurrency level of `bench purchase`.
type PurchaseResult struct {
	Concurrency      int                           `json:"concurrency"`
	Purchases        int                           `json:"purchases"`
	PurchasesPerSec  float64                       `json:"purchases_per_sec"`
	LimitPerSec      float64                       `json:"limit_per_sec"`
	Ratio            float64                       `json:"ratio"`
	Steps            map[string]StepStats          `json:"steps"`
	Errors           map[string]int                `json:"errors,omitempty"`
	OpsPerPurchase   map[string]map[string]float64 `json:"token_ops_per_purchase"` // token → "op mechanism" → count
	RSSStartKiB      int64                         `json:"rss_start_kib"`
	RSSMidKiB        int64                         `json:"rss_mid_kib"` // halfway: growth after warm-up is mid→end
	RSSEndKiB        int64                         `json:"rss_end_kib"`
	SessionsStart    int64                         `json:"sessions_start"`
	SessionsMid      int64                         `json:"sessions_mid"`
	SessionsEnd      int64                         `json:"sessions_end"`
	TokenObjectsDiff int                           `json:"token_objects_diff"`
}

// PurchaseReport is the outcome of RunPurchase, with the token rates the limit used.
type PurchaseReport struct {
	Results []PurchaseResult `json:"results"`
	// TokenRates are ops/s per "op mechanism" measured in the same run on the same
	// tokens through the in-process signer path (its best concurrency).
	TokenRates map[string]float64 `json:"token_rates"`
	Store      string             `json:"store"`
}

// The steps of one purchase, in order, as the report names them.
const (
	StepInit     = "init"     // PInitReq/PInitRes: merchant signs, wallet verifies chains
	StepPrepare  = "prepare"  // OI, PI envelope to the gateway, dual signature (wallet token)
	StepPurchase = "purchase" // PReq → merchant → AuthReq → gateway → AuthRes → PRes (sale: captured)
	StepTotal    = "total"
)

var purchaseSteps = []string{StepInit, StepPrepare, StepPurchase, StepTotal}

// opCounter counts private-key operations per token and mechanism (an hsm.Observer).
type opCounter struct {
	mu sync.Mutex
	n  map[string]map[string]int64
}

func (c *opCounter) ObserveOp(token, _, op, mech string, _ float64, err error) {
	if err != nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[token] == nil {
		c.n[token] = map[string]int64{}
	}
	c.n[token][op+" "+mech]++
}

func (c *opCounter) snapshot() map[string]map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]map[string]int64{}
	for t, m := range c.n {
		out[t] = map[string]int64{}
		for k, v := range m {
			out[t][k] = v
		}
	}
	return out
}

// purchaseBed is a running SET system for the benchmark.
type purchaseBed struct {
	bed     *system.Bed
	mod     *hsm.Module
	tokens  map[string]*hsm.Token
	counter *opCounter
	wallets []*wallet.Wallet
	cleanup []func()
}

func (p *purchaseBed) close() {
	if p.bed != nil {
		p.bed.Close()
	}
	for _, t := range p.tokens {
		_ = t.Close()
	}
	if p.mod != nil {
		_ = p.mod.Close()
	}
	for i := len(p.cleanup) - 1; i >= 0; i-- {
		p.cleanup[i]()
	}
}

// luhnPAN makes a valid 16-digit test PAN from n.
func luhnPAN(n int) string {
	body := fmt.Sprintf("411111%09d", n)
	sum := 0
	for i := len(body) - 1; i >= 0; i-- {
		d := int(body[i] - '0')
		if (len(body)-1-i)%2 == 0 {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
	}
	return body + strconv.Itoa((10-sum%10)%10)
}

func newPurchaseBed(ctx context.Context, cfg PurchaseConfig, cardholders int) (*purchaseBed, error) {
	p := &purchaseBed{tokens: map[string]*hsm.Token{}, counter: &opCounter{n: map[string]map[string]int64{}}}
	dir, err := os.MkdirTemp("", "setpay-bench-purchase-*")
	if err != nil {
		return nil, err
	}
	p.cleanup = append(p.cleanup, func() { _ = os.RemoveAll(dir) })
	fail := func(err error) (*purchaseBed, error) { p.close(); return nil, err }
	d, err := softhsm.Create(filepath.Join(dir, "softhsm"))
	if err != nil {
		return fail(err)
	}
	if err := d.Activate(); err != nil {
		return fail(err)
	}
	pin, err := d.EnsurePIN()
	if err != nil {
		return fail(err)
	}
	path, err := softhsm.FindModule()
	if err != nil {
		return fail(err)
	}
	if p.mod, err = hsm.OpenModule(path, cfg.Logger); err != nil {
		return fail(err)
	}
	for _, label := range []string{"bench-ca", "bench-gateway", "bench-merchant", "bench-wallet"} {
		if err := softhsm.InitToken(p.mod, label, pin); err != nil {
			return fail(err)
		}
		tok, err := p.mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: label}, PIN: hsm.PINSource("file:" + d.PINFile()), MaxSessions: 128, Logger: cfg.Logger})
		if err != nil {
			return fail(err)
		}
		tok.AddObserver(p.counter)
		p.tokens[label] = tok
	}
	gwDSN, merDSN := cfg.StoreDSN, cfg.StoreDSN
	if cfg.StoreDSN == "" {
		gwDSN, merDSN = "sqlite:"+filepath.Join(dir, "gateway.db"), "sqlite:"+filepath.Join(dir, "merchant.db")
	}
	cards := make([]system.CardSpec, cardholders)
	for i := range cards {
		cards[i] = system.CardSpec{Name: fmt.Sprintf("card-%d", i), PAN: luhnPAN(i), Expiry: "203512", Balance: 1 << 50, Limit: 1 << 50}
	}
	p.bed, err = system.Build(ctx, system.Config{
		CARoot: p.tokens["bench-ca"], CA: p.tokens["bench-ca"], TLS: p.tokens["bench-ca"],
		Gateway: p.tokens["bench-gateway"], Merchant: p.tokens["bench-merchant"], Wallet: p.tokens["bench-wallet"],
		GatewayDSN: gwDSN, MerchantDSN: merDSN, GatewayID: "bench-gw", MerchantID: "bench-shop",
		// A sale authorizes and captures at once, so one purchase is the whole money path.
		Offers:   []merchant.Offer{{ID: "sale", Description: "benchmark item", Amount: 1999, Currency: "EUR", Sale: true}},
		Cards:    cards,
		Currency: "EUR",
		Logger:   cfg.Logger,
	}, nil, nil)
	if err != nil {
		return fail(fmt.Errorf("bench: build the SET system: %w", err))
	}
	for i := range cardholders {
		w, err := p.bed.Wallet(i)
		if err != nil {
			return fail(err)
		}
		p.wallets = append(p.wallets, w)
	}
	return p, nil
}

func (p *purchaseBed) sessions() int64 {
	var n int64
	for _, t := range p.tokens {
		n += t.Stats().SessionsOpen.Load()
	}
	return n
}

func (p *purchaseBed) objects(ctx context.Context) int {
	n := 0
	for _, t := range p.tokens {
		objs, err := t.Objects(ctx)
		if err == nil {
			n += len(objs)
		}
	}
	return n
}

// errKind names an error for the report: the SET reason, else the gRPC code.
func errKind(err error) string {
	if r := setproto.ReasonOf(err); r.String() != "" && r.String() != "REASON_UNSPECIFIED" {
		return r.String()
	}
	if st, ok := status.FromError(errors.Unwrap(err)); ok {
		return st.Code().String()
	}
	return "other"
}

// RunPurchase drives complete purchases through the real gRPC services on loopback
// with TLS at each concurrency, then measures the same tokens' signing rates and
// derives the token-bound limit: the purchases/s the tokens could sustain given the
// private-key operations each purchase needs.
func RunPurchase(ctx context.Context, cfg PurchaseConfig) (*PurchaseReport, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if len(cfg.Concurrency) == 0 || cfg.Duration <= 0 {
		return nil, errors.New("bench: concurrency and a positive duration are required")
	}
	maxConc := slices.Max(cfg.Concurrency)
	p, err := newPurchaseBed(ctx, cfg, maxConc)
	if err != nil {
		return nil, err
	}
	defer p.close()
	rep := &PurchaseReport{Store: "sqlite"}
	if cfg.StoreDSN != "" {
		rep.Store = strings.SplitN(cfg.StoreDSN, ":", 2)[0]
	}
	// Warm up: TLS connections, certificate caches, SQLite pages.
	for _, w := range p.wallets {
		if _, err := w.Buy(ctx, "sale"); err != nil {
			return nil, fmt.Errorf("bench: warm-up purchase: %w", err)
		}
	}
	for _, conc := range cfg.Concurrency {
		r, err := runPurchases(ctx, p, conc, cfg.Duration)
		if err != nil {
			return nil, err
		}
		if cfg.Progress != nil {
			fmt.Fprintf(cfg.Progress, "purchases c=%d: %.0f/s, p99 %.1f ms, %d errors\n", conc, r.PurchasesPerSec, r.Steps[StepTotal].P99us/1e3, sumErrors(r.Errors))
		}
		rep.Results = append(rep.Results, r)
	}
	if cfg.PurchasesDone != nil {
		cfg.PurchasesDone()
	}
	rates, err := tokenRates(ctx, p, maxConc)
	if err != nil {
		return nil, err
	}
	rep.TokenRates = rates
	for i := range rep.Results {
		r := &rep.Results[i]
		r.LimitPerSec = limit(r.OpsPerPurchase, rates)
		if r.LimitPerSec > 0 {
			r.Ratio = r.PurchasesPerSec / r.LimitPerSec
		}
	}
	return rep, nil
}

func sumErrors(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// limit is the token-bound purchases/s. The tokens here are one SoftHSM library in
// this process on this machine's cores, so their work adds up: each purchase costs
// Σ count/rate seconds of token capacity.
func limit(ops map[string]map[string]float64, rates map[string]float64) float64 {
	cost := 0.0
	for _, m := range ops {
		for k, n := range m {
			if r := rates[k]; r > 0 {
				cost += n / r
			}
		}
	}
	if cost == 0 {
		return 0
	}
	return 1 / cost
}

// tokenRates measures, on the bench's own gateway token, the operations purchases use,
// through the signer path at concurrencies up to maxConc, keeping the best rate.
func tokenRates(ctx context.Context, p *purchaseBed, maxConc int) (map[string]float64, error) {
	tok := p.tokens["bench-gateway"]
	t := &target{spec: TokenSpec{Label: tok.Label()}, mod: p.mod, tok: tok, svc: signer.NewService()}
	rates := map[string]float64{}
	mechs, err := ParseMechanisms("ecdsa-p256,rsa2048-oaep-decrypt")
	if err != nil {
		return nil, err
	}
	keys := map[string]string{"ecdsa-p256": "sign CKM_ECDSA", "rsa2048-oaep-decrypt": "decrypt CKM_RSA_PKCS_OAEP"}
	defer t.shutdown(ctx)
	levels := []int{1, 2, 4}
	if maxConc > 4 {
		levels = append(levels, min(maxConc, 16))
	}
	for _, m := range mechs {
		ks, err := t.addKey(ctx, m)
		if err != nil {
			return nil, err
		}
		for _, c := range levels {
			n, _, _, err := runPath(ctx, t, ks, PathSigner, c, time.Second)
			if err != nil {
				return nil, err
			}
			rates[keys[m.Name]] = max(rates[keys[m.Name]], float64(n))
		}
	}
	return rates, nil
}

func runPurchases(ctx context.Context, p *purchaseBed, conc int, d time.Duration) (PurchaseResult, error) {
	r := PurchaseResult{Concurrency: conc, Errors: map[string]int{}, Steps: map[string]StepStats{}}
	runtime.GC()
	r.RSSStartKiB = rssKiB()
	r.SessionsStart = p.sessions()
	objsBefore := p.objects(ctx)
	before := p.counter.snapshot()
	lat := make([]map[string][]time.Duration, conc)
	errs := make([]map[string]int, conc)
	var done atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	midDone := make(chan struct{})
	mid := time.AfterFunc(d/2, func() {
		r.RSSMidKiB, r.SessionsMid = rssKiB(), p.sessions()
		close(midDone)
	})
	for i := range conc {
		lat[i] = map[string][]time.Duration{}
		errs[i] = map[string]int{}
		w := p.wallets[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				s, err := w.Start(ctx, "sale")
				t1 := time.Now()
				if err != nil {
					errs[i][StepInit+": "+errKind(err)]++
					continue
				}
				req, err := w.Prepare(s)
				t2 := time.Now()
				if err != nil {
					errs[i][StepPrepare+": "+errKind(err)]++
					continue
				}
				rc, err := w.Send(ctx, s, req)
				t3 := time.Now()
				if err != nil {
					errs[i][StepPurchase+": "+errKind(err)]++
					continue
				}
				if !rc.Approved() {
					errs[i]["declined: "+rc.Result.String()]++
					continue
				}
				lat[i][StepInit] = append(lat[i][StepInit], t1.Sub(t0))
				lat[i][StepPrepare] = append(lat[i][StepPrepare], t2.Sub(t1))
				lat[i][StepPurchase] = append(lat[i][StepPurchase], t3.Sub(t2))
				lat[i][StepTotal] = append(lat[i][StepTotal], t3.Sub(t0))
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if !mid.Stop() {
		<-midDone // the sample ran: wait until it is written
	}
	r.Purchases = int(done.Load())
	r.PurchasesPerSec = float64(r.Purchases) / elapsed.Seconds()
	for _, step := range purchaseSteps {
		var all []time.Duration
		for i := range conc {
			all = append(all, lat[i][step]...)
		}
		slices.Sort(all)
		r.Steps[step] = StepStats{P50us: quantile(all, 0.50), P95us: quantile(all, 0.95), P99us: quantile(all, 0.99)}
	}
	for i := range conc {
		for k, v := range errs[i] {
			r.Errors[k] += v
		}
	}
	after := p.counter.snapshot()
	r.OpsPerPurchase = map[string]map[string]float64{}
	for tok, m := range after {
		for k, v := range m {
			n := v - before[tok][k]
			if n == 0 || r.Purchases == 0 {
				continue
			}
			if r.OpsPerPurchase[tok] == nil {
				r.OpsPerPurchase[tok] = map[string]float64{}
			}
			r.OpsPerPurchase[tok][k] = float64(n) / float64(r.Purchases)
		}
	}
	runtime.GC()
	r.RSSEndKiB = rssKiB()
	r.SessionsEnd = p.sessions()
	r.TokenObjectsDiff = p.objects(ctx) - objsBefore
	return r, nil
}

// rssKiB reads the resident set size from /proc (0 where there is none).
func rssKiB() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// WriteTable prints one row per concurrency and, below, the operations per purchase.
func (r *PurchaseReport) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "conc\tpurchases/s\tlimit/s\tratio\tinit p50/p99 ms\tprepare p50/p99 ms\tpurchase p50/p95/p99 ms\ttotal p50/p95/p99 ms\terrors\tRSS start→mid→end MiB\tsessions start→mid→end\t")
	ms := func(us float64) string { return strconv.FormatFloat(us/1e3, 'f', 1, 64) }
	for _, x := range r.Results {
		s := x.Steps
		fmt.Fprintf(tw, "%d\t%.0f\t%.0f\t%.0f%%\t%s/%s\t%s/%s\t%s/%s/%s\t%s/%s/%s\t%d\t%.0f→%.0f→%.0f\t%d→%d→%d\t\n",
			x.Concurrency, x.PurchasesPerSec, x.LimitPerSec, 100*x.Ratio,
			ms(s[StepInit].P50us), ms(s[StepInit].P99us), ms(s[StepPrepare].P50us), ms(s[StepPrepare].P99us),
			ms(s[StepPurchase].P50us), ms(s[StepPurchase].P95us), ms(s[StepPurchase].P99us),
			ms(s[StepTotal].P50us), ms(s[StepTotal].P95us), ms(s[StepTotal].P99us),
			sumErrors(x.Errors), float64(x.RSSStartKiB)/1024, float64(x.RSSMidKiB)/1024, float64(x.RSSEndKiB)/1024, x.SessionsStart, x.SessionsMid, x.SessionsEnd)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Results) == 0 {
		return nil
	}
	last := r.Results[len(r.Results)-1]
	fmt.Fprintf(w, "\nprivate-key operations per purchase (at concurrency %d), and token rates measured in this run:\n", last.Concurrency)
	var toks []string
	for t := range last.OpsPerPurchase {
		toks = append(toks, t)
	}
	sort.Strings(toks)
	for _, t := range toks {
		var parts []string
		for k, v := range last.OpsPerPurchase[t] {
			parts = append(parts, fmt.Sprintf("%.2f× %s", v, k))
		}
		sort.Strings(parts)
		fmt.Fprintf(w, "  %-15s %s\n", t, strings.Join(parts, ", "))
	}
	var rates []string
	for k, v := range r.TokenRates {
		rates = append(rates, fmt.Sprintf("%s %.0f/s", k, v))
	}
	sort.Strings(rates)
	fmt.Fprintf(w, "  token rates     %s (signer path, best concurrency)\n", strings.Join(rates, ", "))
	for _, x := range r.Results {
		for k, v := range x.Errors {
			fmt.Fprintf(w, "  errors c=%d: %d× %s\n", x.Concurrency, v, k)
		}
	}
	return nil
}

// PurchasePanels are the charts of a purchase run: throughput (with the token-bound
// limit) and p99 latency against concurrency.
func (r *PurchaseReport) PurchasePanels() []Panel {
	thr := Series{Name: "purchases/s", Color: pathColors[PathSigner]}
	lim := Series{Name: "token-bound limit", Color: pathColors[PathRaw]}
	p99 := Series{Name: "p99 total (ms)", Color: pathColors[PathGRPC]}
	for _, x := range r.Results {
		c := float64(x.Concurrency)
		thr.X, thr.Y = append(thr.X, c), append(thr.Y, x.PurchasesPerSec)
		lim.X, lim.Y = append(lim.X, c), append(lim.Y, x.LimitPerSec)
		p99.X, p99.Y = append(p99.X, c), append(p99.Y, x.Steps[StepTotal].P99us/1e3)
	}
	return []Panel{
		{Title: "purchases/s (" + r.Store + ")", XLabel: "concurrency (wallets)", YLabel: "purchases / s", Series: []Series{thr, lim}},
		{Title: "p99 purchase latency", XLabel: "concurrency (wallets)", YLabel: "ms", Series: []Series{p99}},
	}
}

// WriteJSON writes the report to path.
func (r *PurchaseReport) WriteJSON(path string) error { return writeJSON(path, r) }
