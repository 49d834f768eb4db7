# edgeanchor — one target per task. `make help` lists them.
GO        ?= go
BIN       := bin
PKGS      := ./...
TEST_TIMEOUT ?= 14m
FUZZTIME  ?= 20s

.PHONY: help build run test test-short bench lint fuzz clean chaos

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/edgeanchor and bin/firmware-sim
	@mkdir -p $(BIN)
	$(GO) build -o $(BIN)/edgeanchor ./cmd/edgeanchor
	$(GO) build -o $(BIN)/firmware-sim ./firmware-sim

run: build ## start ledger, gateway and simulated devices on 127.0.0.1 (state in ./var)
	$(BIN)/edgeanchor demo --dir ./var

test: build ## vet and run every test with the race detector
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(PKGS)

bench: build ## load benchmarks (results in bench/results/) and micro benchmarks
	@mkdir -p bench/results
	$(GO) test -run '^$$' -bench . -benchmem ./device/... ./anchor/...
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 120m ./bench/...

CHAOS_TIMEOUT ?= 45m

chaos: build ## fault suite on real processes (tests tagged chaos; needs root): full disk on a 64 MiB tmpfs, kill -9 loop under load, ledger outage (~15 min; CHAOS_* env vars size it)
	$(GO) test -tags chaos -count=1 -v -timeout $(CHAOS_TIMEOUT) -run '^TestChaos' ./gateway/ ./internal/chaos/

lint: ## gofmt, go vet and staticcheck
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

fuzz: ## run every fuzz target for FUZZTIME each
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

clean: ## remove binaries and the demo state in ./var
	rm -rf $(BIN) var

.PHONY: golden
golden: ## regenerate every golden file (EDGEANCHOR_UPDATE_GOLDEN=1), then refresh anchor/evidence's copies
	EDGEANCHOR_UPDATE_GOLDEN=1 $(GO) test -count=1 -run '^TestGolden$$' ./device
	EDGEANCHOR_UPDATE_GOLDEN=1 $(GO) test -count=1 -run '^TestAnchorProof$$' ./anchor/ledgerclient
	EDGEANCHOR_UPDATE_GOLDEN=1 $(GO) test -count=1 -run '^TestEndToEndBundleVerifiesOffline$$' ./gateway
	cp anchor/ledgerclient/testdata/anchorproof/proof.json anchor/ledgerclient/testdata/anchorproof/trust.json anchor/evidence/testdata/anchorproof/
	cp gateway/testdata/bundles/bundle.json gateway/testdata/bundles/bundle-other-device.json gateway/testdata/bundles/trust.json anchor/evidence/testdata/
