# n-kudo tasks. `just --list` shows this help.

# Build every binary into ./bin.
build:
    mkdir -p bin
    go build -o bin/ ./cmd/...

# Build static, version-stamped edge binaries for linux/amd64 and linux/arm64 into dist/.
build-edge:
    scripts/build-edge.sh

# Build release tarballs and SHA256SUMS for VERSION into dist/.
release VERSION:
    scripts/release.sh {{VERSION}}

# Run the whole test suite (the README's test command; Postgres starts itself).
test:
    go test -race -timeout 40m ./...

# Run the store and control-plane suites against Postgres only, failing if it cannot start.
test-postgres:
    NKUDO_TEST_POSTGRES=require go test -race ./store/... ./tests/integration/...

# Run the end-to-end suites with the real binaries (builds Gitea on first use).
e2e:
    NKUDO_E2E_GITEA=require go test -timeout 30m ./tests/e2e/...

# Rewrite the planner's golden files after an intended change.
update-golden:
    go test ./diff/ -run Golden -update

# Format check, vet and golangci-lint (pinned, built on first use).
lint:
    test -z "$(gofmt -l $(git ls-files '*.go' | grep -v '^tests/forge/'))"
    go vet ./...
    "$(scripts/build-tool.sh golangci-lint)" run ./...

# Run the benchmarks of the planner, validator, store and API.
bench:
    go test -run '^$' -bench . -benchmem ./schema/ ./diff/ ./store/... ./tests/integration/...

# Run the one-command demo on the embedded defaults.
demo:
    go run ./cmd/nkudo demo

# Everything CI checks, then fail on a dirty tree.
verify: lint test
    go mod tidy
    git diff --exit-code
