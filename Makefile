# setpay: the README's two commands are `make demo` and `make test`.
GO ?= go
VAR ?= ./var

.PHONY: demo test test-tpm2 test-browser browser-deps fuzz deps vet bench-sign clean build install cover-cli

deps:
	@bash scripts/install-deps.sh

# The main job: the end-to-end run on an embedded SoftHSM token and an embedded store.
# `make demo WEB=1` (setpay demo --web) then serves the storefront, the merchant console
# and Alice's wallet UI on loopback, printing their URLs, until Ctrl-C.
# The transcript is on stdout; the parties' own log lines (one per issuance, authorization,
# purchase and lifecycle request at INFO, the services' default) are kept to warnings here
# so the transcript reads on its own: `make demo DEMO_LOG_LEVEL=info` shows them too.
DEMO_LOG_LEVEL ?= warn
demo: deps
	$(GO) run ./cmd/setpay --log-level $(DEMO_LOG_LEVEL) demo --var $(VAR)/demo $(if $(WEB),--web)
	@echo "make demo ran every party in one process; docs/operate.md runs each as a separate service (make build, then the guide)."

# The revision is linked in too, for builds the toolchain cannot stamp (git worktrees,
# GOFLAGS=-buildvcs=false); `setpay version` and setpay_build_info report it.
LDFLAGS ?= -X main.vcsRevision=$(shell git rev-parse HEAD 2>/dev/null)
build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/setpay ./cmd/setpay

install:
	$(GO) install -ldflags "$(LDFLAGS)" ./cmd/setpay

# cmd/setpay's real coverage. Its tests run the built binary (built once, with -cover),
# so the binary's counters (GOCOVERDIR) are merged with the in-process tests' and
# reported by `go tool covdata percent`.
COVERDIR ?= $(CURDIR)/cover
cover-cli: deps
	rm -rf $(COVERDIR)/cli && mkdir -p $(COVERDIR)/cli/bin $(COVERDIR)/cli/unit
	SETPAY_CLI_GOCOVERDIR=$(COVERDIR)/cli/bin $(GO) test -count=1 -cover -timeout 15m ./cmd/setpay/ -args -test.gocoverdir=$(COVERDIR)/cli/unit
	$(GO) tool covdata percent -i=$(COVERDIR)/cli/bin,$(COVERDIR)/cli/unit -pkg=github.com/setpay/setpay/cmd/setpay

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)

# Unit and integration tests on real SoftHSM tokens, real gRPC on loopback, real
# SQLite, and a throwaway PostgreSQL cluster (scripts/pg-test.sh installs and starts it).
test: deps vet
	GO=$(GO) bash scripts/pg-test.sh run bash scripts/test.sh

# The web faces in a real browser: Debian's chromium, headless, driven by chromedp
# (build tag "browser", so `make test` leaves them out). The services run as separate
# processes of the built binary; each page's screenshot goes to SCREENSHOTS.
SCREENSHOTS ?= $(CURDIR)/docs/screenshots
browser-deps:
	@bash scripts/browser-deps.sh

test-browser: deps browser-deps
	SETPAY_SCREENSHOTS=$(SCREENSHOTS) $(GO) test -tags browser -count=1 -timeout 15m -run '^TestBrowser' -v ./cmd/setpay/

# Token-layer tests on a second PKCS#11 module: tpm2-pkcs11 over a software TPM
# (scripts/tpm2-test.sh installs and starts swtpm + tpm2-abrmd, and tears them down).
test-tpm2: deps
	bash scripts/tpm2-test.sh run $(GO) test -race -count=1 -timeout 10m ./hsm/ ./pki/ ./signer/

# Every fuzz target for a short, fixed time (FUZZTIME, default 10s); see docs/fuzzing.md.
fuzz: deps
	GO=$(GO) bash scripts/fuzz.sh

bench-sign: deps
	$(GO) run ./cmd/setpay bench sign --softhsm --mech ecdsa-p256,rsa2048-pkcs1,rsa2048-pss,rsa2048-oaep-decrypt,ecdh-p256 --concurrency 1,2,4,8,16 --duration 5s --out bench-sign.json

clean:
	rm -rf $(VAR) bench-sign.json bin cover
