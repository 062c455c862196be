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
	summary        string // of the command being run, for its --help
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
			"init":      {summary: "create the CA hierarchy with every key in a token", run: runCAInit},
			"serve":     {summary: "serve registration over gRPC", run: runCAServe},
			"enroll":    {summary: "issue a one-time enrollment secret to a merchant or gateway", run: runCAEnroll},
			"revoke":    {summary: "revoke a certificate", run: runCARevoke},
			"crl":       {summary: "write an issuing CA's current CRL", run: runCACRL},
			"approve":   {summary: "list, approve or reject merchant/gateway requests held for approval", run: runCAApprove},
			"tls-issue": {summary: "certify a TLS key (from `setpay tls request`) as a server or a client", run: runCATLSIssue},
		}},
		"merchant": {summary: "the merchant", sub: withMerchantOperatorCommands(map[string]*command{
			"register": {summary: "register with the CA and get certificates", run: runMerchantRegister},
			"serve":    {summary: "serve cardholders (purchase) and talk to the gateway", run: runMerchantServe},
		})},
		"gateway": {summary: "the payment gateway", sub: map[string]*command{
			"register": {summary: "register with the CA and get certificates", run: runGatewayRegister},
			"serve":    {summary: "serve merchants (authorization, capture)", run: runGatewayServe},
		}},
		"wallet": {summary: "the cardholder's wallet", sub: map[string]*command{
			"register": {summary: "register a card with the CA and get a certificate", run: runWalletRegister},
			"buy":      {summary: "buy from a merchant", run: runWalletBuy},
			"ui":       {summary: "serve the wallet as a local web app on 127.0.0.1", run: runWalletUI},
		}},
		"tls": {summary: "TLS keys of the services", sub: map[string]*command{
			"request": {summary: "make a TLS key in a token and a CSR it signs", run: runTLSRequest},
		}},
		"demo":    {summary: "end-to-end purchase on an embedded token and store", run: runDemo},
		"version": {summary: "print the module version and VCS revision", run: runVersion},
	}
}

// Exit codes: 0 success (and help), 1 a runtime error, 2 a usage error.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

// errHelp: help was asked for and printed to stdout.
var errHelp = errors.New("help printed")

// usageError is a mistake in the command line, not in what the command then did.
type usageError struct {
	cmd string // "setpay hsm list", for the hint
	err error
}

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// usageErrorf reports a wrong or missing argument; dispatch fills in the command.
func usageErrorf(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run is the whole program: it parses the global flags, dispatches, and maps the
// outcome to an exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	env := &cliEnv{stdout: stdout, stderr: stderr}
	cmds := commands()
	rest, logger, err := globalFlags(env, cmds, args, getenv)
	if err == nil {
		env.logger = logger
		env.logger.Debug("setpay", "args", redactedArgs(rest), "version", buildVersion().Version)
		err = dispatch(ctx, env, cmds, rest, "setpay")
	}
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %v\n", ue.cmd, ue.err)
		fmt.Fprintf(stderr, "run '%s --help' for usage\n", ue.cmd)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "setpay: %v\n", err)
		return exitRuntime
	}
}

// redactedArgs keeps the command words of args for a debug log (flag values could be
// anything an operator typed).
func redactedArgs(args []string) []string {
	var out []string
	for _, a := range args {
		if strings.HasPrefix(a, "-") {
			break
		}
		out = append(out, a)
	}
	return out
}

// Environment variables the global flags default from.
const (
	logLevelEnv  = "SETPAY_LOG_LEVEL"
	logFormatEnv = "SETPAY_LOG_FORMAT"
)

// globalFlags parses the flags before the command (--log-level, --log-format) and
// builds the logger: flags win over $SETPAY_LOG_LEVEL and $SETPAY_LOG_FORMAT; the
// default is info, text, on stderr: one line per issuance, authorization, purchase and
// lifecycle request, with its result.
func globalFlags(env *cliEnv, cmds map[string]*command, args []string, getenv func(string) string) ([]string, *slog.Logger, error) {
	fs := flag.NewFlagSet("setpay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	level := fs.String("log-level", "", "log level: debug, info, warn or error (default: $"+logLevelEnv+", else info)")
	format := fs.String("log-format", "", "log format: text or json (default: $"+logFormatEnv+", else text)")
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			topUsage(env.stdout, cmds, fs)
			return nil, nil, errHelp
		}
		return nil, nil, &usageError{cmd: "setpay", err: err}
	}
	pick := func(flagName, v, envName string) (string, string) {
		if v != "" {
			return v, "--" + flagName
		}
		return getenv(envName), "$" + envName
	}
	var opts slog.HandlerOptions
	lv, from := pick("log-level", *level, logLevelEnv)
	opts.Level = slog.LevelInfo
	if lv != "" {
		var l slog.Level
		if err := l.UnmarshalText([]byte(lv)); err != nil {
			return nil, nil, &usageError{cmd: "setpay", err: fmt.Errorf("%s %q: want debug, info, warn or error", from, lv)}
		}
		opts.Level = l
	}
	var h slog.Handler
	switch f, from := pick("log-format", *format, logFormatEnv); strings.ToLower(f) {
	case "", "text":
		h = slog.NewTextHandler(env.stderr, &opts)
	case "json":
		h = slog.NewJSONHandler(env.stderr, &opts)
	default:
		return nil, nil, &usageError{cmd: "setpay", err: fmt.Errorf("%s %q: want text or json", from, f)}
	}
	if len(fs.Args()) == 0 {
		topUsage(env.stderr, cmds, fs)
		return nil, nil, &usageError{cmd: "setpay", err: errors.New("no command given")}
	}
	return fs.Args(), slog.New(h), nil
}

func topUsage(w io.Writer, cmds map[string]*command, global *flag.FlagSet) {
	usage(w, cmds, "setpay")
	fmt.Fprintf(w, "\nglobal flags (before the command):\n")
	global.SetOutput(w)
	global.PrintDefaults()
	global.SetOutput(io.Discard)
	fmt.Fprintf(w, "\nLogs go to stderr. 'setpay help <command>' or 'setpay <command> --help' describes a command.\n"+
		"Exit status: 0 success, 1 error, 2 wrong usage.\n")
}

func dispatch(ctx context.Context, env *cliEnv, cmds map[string]*command, args []string, prefix string) error {
	if len(args) == 0 {
		usage(env.stderr, cmds, prefix)
		return &usageError{cmd: prefix, err: errors.New("no command given")}
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(env.stdout, cmds, prefix)
		return errHelp
	case "help":
		if len(args) == 1 {
			usage(env.stdout, cmds, prefix)
			return errHelp
		}
		return dispatch(ctx, env, cmds, append(append([]string{}, args[1:]...), "--help"), prefix)
	}
	c, ok := cmds[args[0]]
	if !ok {
		usage(env.stderr, cmds, prefix)
		return &usageError{cmd: prefix, err: fmt.Errorf("unknown command %q", args[0])}
	}
	name := prefix + " " + args[0]
	if c.sub != nil {
		return dispatch(ctx, env, c.sub, args[1:], name)
	}
	sub := *env
	sub.summary = c.summary
	err := c.run(ctx, &sub, args[1:])
	var ue *usageError
	if errors.As(err, &ue) && ue.cmd == "" {
		ue.cmd = name
	}
	return err
}

func usage(w io.Writer, cmds map[string]*command, prefix string) {
	fmt.Fprintf(w, "usage: %s <command> [flags]\n\ncommands:\n", prefix)
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-16s %s\n", n, cmds[n].summary)
	}
}

// flagSet is a command's flags. Parse prints --help to stdout and returns errHelp, and
// turns a flag mistake or a stray argument into a usage error.
type flagSet struct {
	*flag.FlagSet
	env *cliEnv
}

func (f *flagSet) Parse(args []string) error {
	err := f.FlagSet.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		f.SetOutput(f.env.stdout)
		f.Usage()
		return errHelp
	case err != nil:
		return &usageError{cmd: f.Name(), err: err}
	case f.NArg() > 0:
		return &usageError{cmd: f.Name(), err: fmt.Errorf("unexpected argument %q (flags only)", f.Arg(0))}
	}
	return nil
}

// newFlags makes a command's flag set; its --help shows the command's summary.
func newFlags(name string, env *cliEnv) *flagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: %s [flags]\n\n", name)
		if env.summary != "" {
			fmt.Fprintf(w, "%s\n\n", env.summary)
		}
		fmt.Fprintf(w, "flags:\n")
		fs.PrintDefaults()
	}
	return &flagSet{FlagSet: fs, env: env}
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
