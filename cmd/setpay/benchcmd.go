package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"github.com/setpay/setpay/bench"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/softhsm"
)

func runBenchSign(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay bench sign", env)
	module := fs.String("module", "", "PKCS#11 module path (with --token)")
	var tokens listFlag
	fs.Var(&tokens, "token", "token label to benchmark (repeat for several tokens)")
	pinSource := fs.String("pin-source", "env:SETPAY_PIN", "user PIN source of the tokens: env:NAME or file:/path")
	useSoftHSM := fs.Bool("softhsm", false, "benchmark a throwaway SoftHSM2 token made for this run")
	mechs := fs.String("mech", "ecdsa-p256,rsa2048-pss", "mechanisms: ecdsa-p256, ecdsa-p384, rsa2048-pkcs1, rsa2048-pss, rsa3072-pss, rsa2048-oaep-decrypt, ecdh-p256")
	var conc listFlag
	fs.Var(&conc, "concurrency", "goroutines, e.g. 1,2,4,8,16 (default 1,2,4)")
	duration := fs.Duration("duration", 5*time.Second, "measuring time per token × mechanism × concurrency × path")
	rounds := fs.Int("rounds", 5, "split the duration into this many interleaved rounds; the median round is reported")
	var paths listFlag
	fs.Var(&paths, "paths", "paths to run (default raw,crypto11,signer,grpc,software)")
	jsonOut := fs.String("out", "", "also write the results to this file (JSON)")
	chartOut := fs.String("chart", "", "also draw ops/s against concurrency per path to this file (.svg)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := checkSecretSource(*pinSource); err != nil {
		return usageErrorf("--pin-source: %w", err)
	}
	ms, err := bench.ParseMechanisms(*mechs)
	if err != nil {
		return err
	}
	if len(conc) == 0 {
		conc = listFlag{"1", "2", "4"}
	}
	levels, err := parseLevels(conc)
	if err != nil {
		return err
	}
	cfg := bench.SignConfig{Mechanisms: ms, Concurrency: levels, Duration: *duration, Rounds: *rounds,
		Paths: paths, Progress: env.stderr, Logger: env.logger}
	switch {
	case *useSoftHSM:
		spec, cleanup, err := bench.ThrowawaySoftHSM(env.logger)
		if err != nil {
			return err
		}
		defer cleanup()
		cfg.Tokens = []bench.TokenSpec{spec}
	case len(tokens) > 0:
		if *module == "" {
			if *module, err = softhsm.FindModule(); err != nil {
				return fmt.Errorf("--module is required with --token: %w", err)
			}
		}
		for _, t := range tokens {
			cfg.Tokens = append(cfg.Tokens, bench.TokenSpec{Module: *module, Label: t, PIN: hsm.PINSource(*pinSource)})
		}
	default:
		return usageErrorf("name the tokens with --module PATH --token LABEL, or use --softhsm")
	}
	fmt.Fprintf(env.stderr, "bench sign: %d token(s), %d mechanism(s), concurrency %v, %v per path in %d rounds\n",
		len(cfg.Tokens), len(ms), levels, *duration, *rounds)
	rep, err := bench.RunSign(ctx, cfg)
	if err != nil {
		return err
	}
	if err := rep.WriteTable(env.stdout); err != nil {
		return err
	}
	fmt.Fprintln(env.stdout)
	rep.WriteSummary(env.stdout)
	if *jsonOut != "" {
		if err := rep.WriteJSON(*jsonOut); err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "wrote %s\n", *jsonOut)
	}
	if *chartOut != "" {
		if err := bench.WriteChart(*chartOut, rep.SignPanels()); err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "wrote %s\n", *chartOut)
	}
	return nil
}

func runBenchPurchase(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay bench purchase", env)
	var conc listFlag
	fs.Var(&conc, "concurrency", "concurrent wallets, e.g. 1,4,16,64 (default 1,4,16)")
	duration := fs.Duration("duration", 5*time.Second, "measuring time per concurrency")
	storeDSN := fs.String("store", "", "store of the gateway and merchant: empty for SQLite files, or a postgres:// DSN")
	jsonOut := fs.String("out", "", "also write the results to this file (JSON)")
	chartOut := fs.String("chart", "", "also draw purchases/s and p99 against concurrency to this file (.svg)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the run to this file")
	memProfile := fs.String("memprofile", "", "write a heap profile at the end of the run to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(conc) == 0 {
		conc = listFlag{"1", "4", "16"}
	}
	levels, err := parseLevels(conc)
	if err != nil {
		return err
	}
	stop, stopCPU, err := startProfiles(*cpuProfile, *memProfile)
	if err != nil {
		return err
	}
	fmt.Fprintf(env.stderr, "bench purchase: concurrency %v, %v each; building a SET system on SoftHSM tokens...\n", levels, *duration)
	rep, err := bench.RunPurchase(ctx, bench.PurchaseConfig{Concurrency: levels, Duration: *duration, StoreDSN: *storeDSN, Progress: env.stderr, Logger: env.logger,
		PurchasesDone: stopCPU})
	if perr := stop(); err == nil && perr != nil {
		err = perr
	}
	if err != nil {
		return err
	}
	if err := rep.WriteTable(env.stdout); err != nil {
		return err
	}
	if *jsonOut != "" {
		if err := rep.WriteJSON(*jsonOut); err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "wrote %s\n", *jsonOut)
	}
	if *chartOut != "" {
		if err := bench.WriteChart(*chartOut, rep.PurchasePanels()); err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "wrote %s\n", *chartOut)
	}
	return nil
}

func parseLevels(conc listFlag) ([]int, error) {
	var levels []int
	for _, c := range conc {
		n, err := strconv.Atoi(c)
		if err != nil || n < 1 || n > 1024 {
			return nil, usageErrorf("--concurrency %q: want whole numbers from 1 to 1024", c)
		}
		levels = append(levels, n)
	}
	return levels, nil
}

// startProfiles starts CPU profiling. It returns stop, which ends it and writes the
// heap profile, and stopCPU, which ends only the CPU profile (both may be called).
func startProfiles(cpu, mem string) (stop func() error, stopCPU func(), err error) {
	var cpuFile *os.File
	var once sync.Once
	var cpuErr error
	if cpu != "" {
		f, err := os.Create(cpu)
		if err != nil {
			return nil, nil, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			_ = f.Close()
			return nil, nil, err
		}
		cpuFile = f
	}
	stopCPU = func() {
		once.Do(func() {
			if cpuFile != nil {
				pprof.StopCPUProfile()
				cpuErr = cpuFile.Close()
			}
		})
	}
	return func() error {
		stopCPU()
		if cpuErr != nil {
			return cpuErr
		}
		if mem != "" {
			f, err := os.Create(mem)
			if err != nil {
				return err
			}
			runtime.GC()
			if err := pprof.WriteHeapProfile(f); err != nil {
				_ = f.Close()
				return err
			}
			return f.Close()
		}
		return nil
	}, stopCPU, nil
}
