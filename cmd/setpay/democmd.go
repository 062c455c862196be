package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/setpay/setpay/bench"
	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/softhsm"
)

// runDemo is the README's main job. Until the purchase flow lands it makes the dev
// tokens, generates the role keys inside them and runs a short signing benchmark.
func runDemo(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay demo", env)
	varDir := fs.String("var", "./var", "directory for the embedded token and store")
	if err := fs.Parse(args); err != nil {
		return err
	}
	d, err := softhsm.Create(filepath.Join(*varDir, "softhsm"))
	if err != nil {
		return err
	}
	if err := d.Activate(); err != nil {
		return err
	}
	pin, err := d.EnsurePIN()
	if err != nil {
		return err
	}
	path, err := softhsm.FindModule()
	if err != nil {
		return err
	}
	mod, err := hsm.OpenModule(path, env.logger)
	if err != nil {
		return err
	}
	const label = "setpay-demo"
	if _, err := mod.Find(hsm.Selector{Label: label}); err != nil {
		if err := softhsm.InitToken(mod, label, pin); err != nil {
			_ = mod.Close()
			return err
		}
	}
	tok, err := mod.OpenToken(ctx, hsm.TokenConfig{Selector: hsm.Selector{Label: label}, PIN: hsm.PINSource("file:" + d.PINFile()), Logger: env.logger})
	if err != nil {
		_ = mod.Close()
		return err
	}
	for _, k := range []hsm.KeySpec{
		{Label: "gateway-sign", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign},
		{Label: "gateway-kex", Algorithm: hsm.RSA2048, Usage: hsm.UsageKeyExchange},
		{Label: "merchant-sign", Algorithm: hsm.ECDSAP256, Usage: hsm.UsageSign},
	} {
		key, err := tok.FindKey(ctx, k.Label)
		if err != nil {
			if key, err = tok.GenerateKey(ctx, k); err != nil {
				return err
			}
		}
		fmt.Fprintf(env.stdout, "key %-14s %-10s %-11s %s\n", k.Label, key.Algorithm(), key.Usage(), key.URI())
	}
	_ = tok.Close()
	_ = mod.Close()
	fmt.Fprintln(env.stdout, "\nsigning throughput on this token (1 s per path):")
	rep, err := bench.RunSign(ctx, bench.SignConfig{
		Tokens:      []bench.TokenSpec{{Module: path, Label: label, PIN: hsm.PINSource("file:" + d.PINFile())}},
		Mechanisms:  mustMechs("ecdsa-p256"),
		Concurrency: []int{1, 2},
		Duration:    time.Second,
		Rounds:      1,
		Paths:       []string{bench.PathRaw, bench.PathSigner, bench.PathSoftware},
		Logger:      env.logger,
	})
	if err != nil {
		return err
	}
	return rep.WriteTable(os.Stdout)
}

func mustMechs(s string) []bench.Mechanism {
	m, err := bench.ParseMechanisms(s)
	if err != nil {
		panic(err) // a constant list; a typo is a programming error
	}
	return m
}
