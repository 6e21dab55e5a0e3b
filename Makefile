# Gatehouse developer tasks. The README's two commands are the truth; this file serves them.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

BUF := go tool -modfile=tools/buf/go.mod buf

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-15s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: run
run: ## Run a node on the embedded SQLite database (gatehouse.db).
	go run ./cmd/gatehouse

.PHONY: bench
bench: ## Run every load scenario of cmd/gatehouse-bench (a throwaway PostgreSQL; JSON lines on stdout).
	go run ./cmd/gatehouse-bench --scenario all

.PHONY: protodeps
protodeps: ## Copy the pinned third-party protos out of the Go module cache.
	./scripts/protodeps.sh

.PHONY: sdkdeps
sdkdeps: ## Install the pinned client toolchains the tests use: npm ci, the SDK's Python venv, Debian's chromium, schemathesis, grpcurl, grpc-health-probe and buf.
	./scripts/sdk-typescript.sh deps browser-deps
	./scripts/sdk-python.sh deps
	./scripts/fuzz-rest.sh deps
	./scripts/clients-tools.sh deps

.PHONY: generate
generate: protodeps ## Regenerate gen/ (Go, Connect, gateway, OpenAPI, TypeScript, Python) and the ent code.
	rm -rf gen/go gen/openapi/gatehouse.swagger.json
	$(BUF) generate
	go generate ./ent
	./scripts/sdk-typescript.sh generate
	./scripts/sdk-python.sh generate

.PHONY: checkgenerate
checkgenerate: ## Fail if generated code (every language) differs from a fresh generation.
	./scripts/checkgenerate.sh
	./scripts/sdk-typescript.sh check
	./scripts/sdk-python.sh check

.PHONY: lint
lint: protodeps ## buf lint, gofmt and go vet.
	$(BUF) lint
	@out=$$(gofmt -l $$(ls -d client cmd server internal integration ent/schema gen/openapi 2>/dev/null)); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

.PHONY: test
test: sdkdeps lint checkgenerate ## The whole suite: lint, generation check, and every test with -race (the SDKs' included).
	go test -race -count=1 -timeout 30m ./...
	@# The tests that skip themselves under -race (SQLite runs some twentyfold slower there).
	go test -count=1 -run 'TestEndingManySessions' ./server/session/

.PHONY: gobench
gobench: ## Run the Go benchmarks (go test -bench).
	go test -run '^$$' -bench . -benchmem ./...
