package main

// `setpay merchant console-user`: adds an operator to the merchant console's users
// file (console.users_file in merchant.yaml), or sets a new password for one. The
// file holds name:bcrypt-hash lines and is a secret file: written 0600 atomically,
// refused when group or others may read it. A running `merchant serve` reads it again
// on every login, so a new user needs no restart.

import (
	"context"
	"fmt"

	"github.com/setpay/setpay/merchant/console"
)

func runConsoleUser(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay merchant console-user", env)
	name := fs.String("user", "", "the operator's login name, 1..64 characters of [A-Za-z0-9._@-] (required)")
	usersFile := fs.String("users-file", "", "the console's users file, as console.users_file names it; made if missing (required)")
	passFile := fs.String("password-file", "", fmt.Sprintf("file holding the password, %d..%d characters, mode 0600 (default: $SETPAY_CONSOLE_PASSWORD)",
		console.MinPasswordLen, console.MaxPasswordLen))
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *name == "" {
		return usageErrorf("--user is required")
	}
	if err := console.CheckUserName(*name); err != nil {
		return usageErrorf("--user: %v", err)
	}
	if *usersFile == "" {
		return usageErrorf("--users-file is required")
	}
	pw, err := readSecret(*passFile, "SETPAY_CONSOLE_PASSWORD", "console password")
	if err != nil {
		return err
	}
	if err := console.CheckPassword(pw); err != nil {
		return fmt.Errorf("console password: %w", err)
	}
	replaced, err := console.SetUser(*usersFile, *name, pw)
	if err != nil {
		return err
	}
	if replaced {
		fmt.Fprintf(env.stdout, "console user %s: password changed in %s\n", *name, *usersFile)
	} else {
		fmt.Fprintf(env.stdout, "console user %s: added to %s\n", *name, *usersFile)
	}
	return nil
}
