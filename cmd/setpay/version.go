package main

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// vcsRevision is the commit the binary was built from when the Go toolchain could not
// stamp it (a git worktree, or -buildvcs=false): `make build` sets it with
// -ldflags "-X main.vcsRevision=...". It is never changed at run time.
var vcsRevision string

// buildInfo is what `setpay version` and the setpay_build_info metric report.
type buildInfo struct {
	Version   string // module version: a tag, a pseudo-version, or (devel)
	Revision  string // VCS commit, or "unknown"
	Modified  bool   // built from a tree with uncommitted changes
	GoVersion string
}

func buildVersion() buildInfo {
	b := buildInfo{Version: "(devel)", Revision: vcsRevision, GoVersion: runtime.Version()}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Version != "" {
			b.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	if b.Revision == "" {
		b.Revision = "unknown"
	}
	return b
}

func (b buildInfo) String() string {
	mod := ""
	if b.Modified {
		mod = " (modified)"
	}
	return fmt.Sprintf("setpay %s revision %s%s %s", b.Version, b.Revision, mod, b.GoVersion)
}

func runVersion(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlags("setpay version", env)
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Fprintln(env.stdout, buildVersion())
	return nil
}

// registerBuildInfo adds setpay_build_info{version,revision,goversion} 1 to reg.
func registerBuildInfo(reg *prometheus.Registry) error {
	b := buildVersion()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "setpay_build_info", Help: "The running setpay's module version and VCS revision (always 1).",
		ConstLabels: prometheus.Labels{"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion}})
	g.Set(1)
	return reg.Register(g)
}
