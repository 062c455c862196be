// Command setpay runs every part of setpay: token administration, the signing service,
// the CA, the gateway, the merchant, the wallet, the demo and the benchmarks.
//
// PINs are never taken from the command line: --pin-source names an environment
// variable (env:NAME) or a file (file:/path).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand; groups ("hsm", "ca") nest them.
type command struct {
	summary string
	run     func(ctx context.Context, env *cliEnv, args []string) error
	sub     map[string]*command
}

// cliEnv is what every command gets instead of globals.
type cliEnv struct {
	stdout, stderr io.Writer
	logger         *slog.Logger
}

func commands() map[string]*command {
	return map[string]*command{
		"audit": {summary: "audit log", sub: map[string]*command{"verify": {summary: "verify the hash chain of a store's audit log", run: runAuditVerify}}},
		"store": {summary: "durable stores", sub: map[string]*command{"init": {summary: "create a gateway or merchant store (other commands never create one)", run: runStoreInit}}},
		"hsm": {summary: "administer PKCS#11 tokens", sub: map[string]*command{
			"init-softhsm": {summary: "create a SoftHSM2 dev token directory and tokens", run: runInitSoftHSM},
			"keygen":       {summary: "generate a key pair inside a token", run: runKeygen},
			"list":         {summary: "list a token's objects and their access flags", run: runList},
			"delete":       {summary: "delete a key pair from a token", run: runDelete},
			"rename":       {summary: "rename a key pair in a token", run: runRename},
		}},
		"signer": {summary: "the signing service", sub: map[string]*command{
			"serve": {summary: "serve token keys over gRPC with mutual TLS", run: runSignerServe},
		}},
		"bench": {summary: "benchmarks", sub: map[string]*command{
			"sign":     {summary: "per-token signing throughput across access paths", run: runBenchSign},
			"purchase": {summary: "end-to-end purchases through the real services, against the token-bound limit", run: runBenchPurchase},
		}},
		"ca": {summary: "the SET certificate authority", sub: map[string]*command{
			"init":    {summary: "create the CA hierarchy with every key in a token", run: runCAInit},
			"serve":   {summary: "serve registration over gRPC", run: runCAServe},
			"enroll":  {summary: "issue a one-time enrollment secret to a merchant or gateway", run: runCAEnroll},
			"revoke":  {summary: "revoke a certificate", run: runCARevoke},
			"crl":     {summary: "write an issuing CA's current CRL", run: runCACRL},
			"approve": {summary: "list, approve or reject merchant/gateway requests held for approval", run: runCAApprove},
		}},
		"merchant": {summary: "the merchant", sub: map[string]*command{
			"register": {summary: "register with the CA and get certificates", run: runMerchantRegister},
			"serve":    {summary: "serve cardholders (purchase) and talk to the gateway", run: runMerchantServe},
		}},
		"gateway": {summary: "the payment gateway", sub: map[string]*command{
			"register": {summary: "register with the CA and get certificates", run: runGatewayRegister},
			"serve":    {summary: "serve merchants (authorization, capture)", run: runGatewayServe},
		}},
		"wallet": {summary: "the cardholder's wallet", sub: map[string]*command{
			"register": {summary: "register a card with the CA and get a certificate", run: runWalletRegister},
			"buy":      {summary: "buy from a merchant", run: runWalletBuy},
		}},
		"demo": {summary: "end-to-end purchase on an embedded token and store", run: runDemo},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &cliEnv{stdout: os.Stdout, stderr: os.Stderr,
		logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: logLevel()}))}
	if err := dispatch(ctx, env, commands(), os.Args[1:], "setpay"); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		fmt.Fprintf(os.Stderr, "setpay: %v\n", err)
		os.Exit(1)
	}
}

func logLevel() slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(os.Getenv("SETPAY_LOG_LEVEL"))); err != nil {
		return slog.LevelWarn
	}
	return l
}

func dispatch(ctx context.Context, env *cliEnv, cmds map[string]*command, args []string, prefix string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(env.stderr, cmds, prefix)
		return flag.ErrHelp
	}
	c, ok := cmds[args[0]]
	if !ok {
		usage(env.stderr, cmds, prefix)
		return fmt.Errorf("unknown command %q", prefix+" "+args[0])
	}
	if c.sub != nil {
		return dispatch(ctx, env, c.sub, args[1:], prefix+" "+args[0])
	}
	return c.run(ctx, env, args[1:])
}

func usage(w io.Writer, cmds map[string]*command, prefix string) {
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\ncommands:\n", prefix)
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, cmds[n].summary)
	}
}

// newFlags makes a FlagSet that reports errors instead of exiting.
func newFlags(name string, env *cliEnv) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	return fs
}

// listFlag collects a repeated flag ("--token a --token b") or a comma list.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error {
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			*l = append(*l, p)
		}
	}
	return nil
}
