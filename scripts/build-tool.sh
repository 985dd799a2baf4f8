#!/usr/bin/env bash
# build-tool.sh builds a pinned developer tool that CI runs (helm renders the
# Helm chart in deploy/helm, golangci-lint lints the tree) from the Go module
# proxy, or reuses the cached binary, and prints its path on stdout (progress
# goes to stderr).
#
#   scripts/build-tool.sh helm|golangci-lint [--check]
#
# The versions are pinned here; bumping one is a one-line change that also
# rebuilds the binary, since the cache is keyed by version.
#
#   NKUDO_CACHE   cache root (default $HOME/.cache/nkudo); the binary lands in
#                 $NKUDO_CACHE/bin/<tool>-<version>
#   NKUDO_TOOL_REBUILD=1  rebuild even when the cached binary matches
#
# With --check it builds nothing: it prints the path and exits 0 when the
# cached binary matches, and exits 3 when a build is needed.
set -euo pipefail

usage() { echo "usage: $0 helm|golangci-lint [--check]" >&2; exit 2; }

tool=${1:-}
check=false
case "${2:-}" in
--check) check=true ;;
"") ;;
*) usage ;;
esac

case "$tool" in
helm)
	mod=helm.sh/helm/v4
	pkg=$mod/cmd/helm
	version=v4.3.2
	;;
golangci-lint)
	mod=github.com/golangci/golangci-lint/v2
	pkg=$mod/cmd/golangci-lint
	version=v2.15.0
	;;
*) usage ;;
esac

dir="${NKUDO_CACHE:-$HOME/.cache/nkudo}/bin"
bin="$dir/$tool-$version"

# The binary's build information names the module version it was built
# from (`helm version` cannot: its version is set by its release's ldflags).
matches() {
	local out
	out=$(go version -m "$bin" 2>/dev/null) || return 1
	[[ "$out" == *$'\tmod\t'"$mod"$'\t'"$version"$'\t'* ]]
}

if [[ "${NKUDO_TOOL_REBUILD:-}" != 1 && -x "$bin" ]] && matches; then
	echo "build-tool: reusing $bin" >&2
	echo "$bin"
	exit 0
fi

if $check; then
	echo "build-tool: $bin is missing or not $tool $version: a build is needed" >&2
	exit 3
fi

mkdir -p "$dir"
echo "build-tool: building $pkg@$version into $bin (a cold build takes minutes)" >&2
start=$(date +%s)
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
# `go install pkg@version` builds outside this module, with the tool's own
# go.mod and go.sum (checked against the checksum database), so the tool's
# dependencies never enter ours. CGO is off: both tools are pure Go.
CGO_ENABLED=0 GOBIN="$tmp" GOFLAGS=-buildvcs=false nice -n 10 go install "$pkg@$version"
mv "$tmp/$tool" "$bin"
matches || { echo "build-tool: built $bin but its build information does not say $mod $version" >&2; exit 1; }
echo "build-tool: built $tool $version in $(( $(date +%s) - start ))s" >&2
echo "$bin"
