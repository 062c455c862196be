package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/setpay/setpay/hsm"
	"github.com/setpay/setpay/softhsm"
)

// runInitSoftHSM creates a dev token directory with one token per label. The user PIN
// is random and kept in the directory's PIN file unless --pin-source names one.
func runInitSoftHSM(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay hsm init-softhsm", env)
	dir := fs.String("softhsm-dir", "./var/softhsm", "SoftHSM2 dev token directory to create (or add tokens to)")
	var labels listFlag
	fs.Var(&labels, "tokens", "token labels to create (comma-separated or repeated)")
	pinSource := fs.String("pin-source", "", "user PIN source (default: a random PIN in <softhsm-dir>/user-pin)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(labels) == 0 {
		labels = listFlag{"setpay-dev"}
	}
	if *pinSource != "" {
		if err := checkSecretSource(*pinSource); err != nil {
			return usageErrorf("--pin-source: %w", err)
		}
	}
	d, err := softhsm.Create(*dir)
	if err != nil {
		return err
	}
	if err := d.Activate(); err != nil {
		return err
	}
	var pin string
	if *pinSource != "" {
		if pin, err = hsm.PINSource(*pinSource).Resolve(); err != nil {
			return err
		}
	} else if pin, err = d.EnsurePIN(); err != nil {
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
	defer mod.Close()
	for _, l := range labels {
		if _, err := mod.Find(hsm.Selector{Label: l}); err == nil {
			fmt.Fprintf(env.stdout, "token %q already exists in %s\n", l, d.Root)
			continue
		}
		if err := softhsm.InitToken(mod, l, pin); err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "created token %q in %s\n", l, d.Root)
	}
	src := *pinSource
	if src == "" {
		src = "file:" + d.PINFile()
	}
	fmt.Fprintf(env.stdout, "use: --softhsm-dir %s (module %s, pin-source %s)\n", d.Root, path, src)
	return nil
}

func runKeygen(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay hsm keygen", env)
	tf := tokenFlagsOn(fs)
	label := fs.String("label", "", "key label (CKA_LABEL)")
	alg := fs.String("alg", string(hsm.ECDSAP256), "ecdsa-p256, ecdsa-p384, rsa2048, rsa3072 or hmac-sha256 (a secret MAC key)")
	usage := fs.String("usage", string(hsm.UsageSign), "what the key may do: sign or keyexchange; mac for hmac-sha256")
	if err := fs.Parse(args); err != nil {
		return err
	}
	mod, tok, err := tf.open(ctx, env)
	if err != nil {
		return err
	}
	defer mod.Close()
	defer tok.Close()
	spec := hsm.KeySpec{Label: *label, Algorithm: hsm.Algorithm(*alg), Usage: hsm.Usage(*usage)}
	if spec.Algorithm == hsm.HMACSHA256 {
		set := false
		fs.Visit(func(f *flag.Flag) { set = set || f.Name == "usage" })
		if !set { // the flag's default is for key pairs
			spec.Usage = hsm.UsageMAC
		}
		k, err := tok.GenerateSecretKey(ctx, spec)
		if err != nil {
			return err
		}
		fmt.Fprintln(env.stdout, k.URI())
		return nil
	}
	k, err := tok.GenerateKey(ctx, spec)
	if err != nil {
		return err
	}
	fmt.Fprintln(env.stdout, k.URI())
	return nil
}

func runList(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay hsm list", env)
	tf := tokenFlagsOn(fs)
	asJSON := fs.Bool("json", false, "print a JSON array (machine-readable) instead of a table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !tf.selected() {
		// No token: list the module's tokens.
		if err := tf.resolve(); err != nil {
			return err
		}
		mod, err := hsm.OpenModule(tf.module, env.logger)
		if err != nil {
			return softhsmHint(tf.module, err)
		}
		defer mod.Close()
		ts, err := mod.Tokens()
		if err != nil {
			return err
		}
		if *asJSON {
			out := make([]tokenJSON, 0, len(ts))
			for _, t := range ts {
				out = append(out, tokenJSON{Slot: t.Slot, Label: t.Label, Serial: t.Serial, Manufacturer: t.Manufacturer, Model: t.Model, Initialized: t.Initialized})
			}
			return writeListJSON(env.stdout, out)
		}
		tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "SLOT\tLABEL\tSERIAL\tMANUFACTURER\tMODEL\tINITIALISED")
		for _, t := range ts {
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%v\n", t.Slot, t.Label, t.Serial, t.Manufacturer, t.Model, t.Initialized)
		}
		return tw.Flush()
	}
	mod, tok, err := tf.open(ctx, env)
	if err != nil {
		return err
	}
	defer mod.Close()
	defer tok.Close()
	objs, err := tok.Objects(ctx)
	if err != nil {
		return err
	}
	flagsOn := func(o hsm.ObjectInfo) []string {
		on := []string{}
		for name, v := range o.Flags {
			if v {
				on = append(on, strings.ToLower(strings.TrimPrefix(name, "CKA_")))
			}
		}
		sort.Strings(on)
		return on
	}
	if *asJSON {
		out := make([]objectJSON, 0, len(objs))
		for _, o := range objs {
			out = append(out, objectJSON{Class: o.Class, Type: o.KeyType, Label: o.Label, ID: hex.EncodeToString(o.ID), Flags: flagsOn(o), URI: o.URI})
		}
		return writeListJSON(env.stdout, out)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLASS\tTYPE\tLABEL\tFLAGS\tURI")
	for _, o := range objs {
		on := flagsOn(o)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.Class, o.KeyType, o.Label, strings.Join(on, ","), o.URI)
	}
	return tw.Flush()
}

// tokenJSON is one token of `hsm list --json` (without --token).
type tokenJSON struct {
	Slot         uint   `json:"slot"`
	Label        string `json:"label"`
	Serial       string `json:"serial"`
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	Initialized  bool   `json:"initialized"`
}

// objectJSON is one object of `hsm list --token T --json`.
type objectJSON struct {
	Class string   `json:"class"`
	Type  string   `json:"type"`
	Label string   `json:"label"`
	ID    string   `json:"id"` // CKA_ID, hex
	Flags []string `json:"flags"`
	URI   string   `json:"uri"`
}

// writeListJSON prints v as indented JSON: the --json output of the list commands.
func writeListJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func runDelete(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay hsm delete", env)
	tf := tokenFlagsOn(fs)
	label := fs.String("label", "", "key label")
	if err := fs.Parse(args); err != nil {
		return err
	}
	mod, tok, err := tf.open(ctx, env)
	if err != nil {
		return err
	}
	defer mod.Close()
	defer tok.Close()
	k, err := tok.FindKey(ctx, *label)
	if errors.Is(err, hsm.ErrKeyNotFound) {
		// A secret (MAC) key: deleting the PAN hash key retires every hash made with it.
		sk, serr := tok.FindSecretKey(ctx, *label)
		if serr != nil {
			return err
		}
		return tok.DeleteSecretKey(ctx, sk)
	}
	if err != nil {
		return err
	}
	return tok.DeleteKey(ctx, k)
}

func runRename(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay hsm rename", env)
	tf := tokenFlagsOn(fs)
	label := fs.String("label", "", "current key label")
	to := fs.String("to", "", "new key label")
	if err := fs.Parse(args); err != nil {
		return err
	}
	mod, tok, err := tf.open(ctx, env)
	if err != nil {
		return err
	}
	defer mod.Close()
	defer tok.Close()
	k, err := tok.FindKey(ctx, *label)
	if err != nil {
		return err
	}
	return tok.RenameKey(ctx, k, *to)
}
