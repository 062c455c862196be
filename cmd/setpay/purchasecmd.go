package main

import "context"

// Purchase commands: owned by the purchase-flow work (issue: purchase and authorization).

func runMerchantServe(ctx context.Context, env *cliEnv, args []string) error { return errNotYet }
func runGatewayServe(ctx context.Context, env *cliEnv, args []string) error  { return errNotYet }
func runWalletBuy(ctx context.Context, env *cliEnv, args []string) error     { return errNotYet }
