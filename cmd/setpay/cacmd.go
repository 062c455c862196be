package main

import (
	"context"
	"errors"
)

// Registration commands: owned by the CA work (issue: SET certificate hierarchy).
var errNotYet = errors.New("not implemented yet")

func runCAInit(ctx context.Context, env *cliEnv, args []string) error           { return errNotYet }
func runCAServe(ctx context.Context, env *cliEnv, args []string) error          { return errNotYet }
func runCAEnroll(ctx context.Context, env *cliEnv, args []string) error         { return errNotYet }
func runCARevoke(ctx context.Context, env *cliEnv, args []string) error         { return errNotYet }
func runCACRL(ctx context.Context, env *cliEnv, args []string) error            { return errNotYet }
func runMerchantRegister(ctx context.Context, env *cliEnv, args []string) error { return errNotYet }
func runGatewayRegister(ctx context.Context, env *cliEnv, args []string) error  { return errNotYet }
func runWalletRegister(ctx context.Context, env *cliEnv, args []string) error   { return errNotYet }
