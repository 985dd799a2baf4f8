#!/usr/bin/env bash
# build-gitea.sh builds the Gitea binary that the forge end-to-end suite
# (tests/e2e/gitea_test.go) runs, or reuses the cached one, and prints its path
# on stdout (progress goes to stderr).
#
# The Gitea version is the one tests/forge/go.mod requires. The binary is built
# with CGO and the sqlite tags so that every throw-away instance keeps its
# database in one file of its temp dir and needs no database server.
#
#   NKUDO_CACHE   cache root (default $HOME/.cache/nkudo); the binary lands in
#                 $NKUDO_CACHE/gitea-<version>/gitea
#   NKUDO_GITEA_REBUILD=1  rebuild even when the cached binary matches
#
# With --check it builds nothing: it prints the path and exits 0 when the
# cached binary matches, and exits 3 when a build is needed.
set -euo pipefail

check=false
case "${1:-}" in
--check) check=true ;;
"") ;;
*) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
forge="$root/tests/forge"
tags="sqlite sqlite_unlock_notify"

version=$(cd "$forge" && go list -m -f '{{.Version}}' code.gitea.io/gitea)
plain=${version#v}
dir="${NKUDO_CACHE:-$HOME/.cache/nkudo}/gitea-$version"
bin="$dir/gitea"

# Gitea is not a bindata build: it serves translations and templates from its
# module directory (STATIC_ROOT_PATH), so make sure that is present too.
(cd "$forge" && go mod download code.gitea.io/gitea) >&2

# `gitea --version` prints "Gitea version 1.26.0 built with go1.26.8 : sqlite, sqlite_unlock_notify".
matches() {
	local out
	out=$("$bin" --version 2>/dev/null) || return 1
	[[ "$out" == *"version $plain "* && "$out" == *"sqlite_unlock_notify"* ]]
}

if [[ "${NKUDO_GITEA_REBUILD:-}" != 1 && -x "$bin" ]] && matches; then
	echo "build-gitea: reusing $bin ($("$bin" --version))" >&2
	echo "$bin"
	exit 0
fi

if $check; then
	echo "build-gitea: $bin is missing or not Gitea $version with sqlite: a build is needed" >&2
	exit 3
fi

mkdir -p "$dir"
echo "build-gitea: building Gitea $version into $bin (a cold build takes minutes and about 1.5 GB)" >&2
start=$(date +%s)
tmp="$bin.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(
	cd "$forge"
	CGO_ENABLED=1 nice -n 10 go build -tags "$tags" \
		-ldflags "-s -w -X 'main.Version=$plain' -X 'main.Tags=$tags'" \
		-o "$tmp" code.gitea.io/gitea
)
mv "$tmp" "$bin"
trap - EXIT
matches || { echo "build-gitea: built $bin but its --version does not say $plain with sqlite" >&2; exit 1; }
echo "build-gitea: built in $(( $(date +%s) - start ))s: $("$bin" --version)" >&2
echo "$bin"
