# shellcheck shell=bash
# Shared helpers for the build and release scripts. Sourced, never run.
#
# Build identity (stamped into internal/version with -ldflags -X):
#   VERSION  release version; default: `git describe --tags --match 'v*' --dirty`, else "dev"
#   COMMIT   source commit; default: `git rev-parse HEAD`, else "unknown"
#   DATE     RFC 3339 UTC; default: SOURCE_DATE_EPOCH, else the commit time, so
#            rebuilding the same commit gives the same bytes.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VERSION_PKG="github.com/nkudo/nkudo/internal/version"
DEFAULT_PLATFORMS="linux/amd64 linux/arm64"

die() { printf '%s: error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }
note() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; }

in_git() { git -C "$REPO_ROOT" rev-parse --git-dir >/dev/null 2>&1; }

# detect_identity fills VERSION, COMMIT, DATE and SOURCE_DATE_EPOCH where unset.
detect_identity() {
	if [[ -z "${VERSION:-}" ]]; then
		VERSION=dev
		if in_git; then
			VERSION="$(git -C "$REPO_ROOT" describe --tags --match 'v*' --dirty 2>/dev/null || echo dev)"
		fi
	fi
	if [[ -z "${COMMIT:-}" ]]; then
		COMMIT=unknown
		if in_git; then
			COMMIT="$(git -C "$REPO_ROOT" rev-parse HEAD 2>/dev/null || echo unknown)"
		fi
	fi
	if [[ -z "${SOURCE_DATE_EPOCH:-}" ]]; then
		SOURCE_DATE_EPOCH="$(date -u +%s)"
		if in_git; then
			SOURCE_DATE_EPOCH="$(git -C "$REPO_ROOT" log -1 --format=%ct 2>/dev/null || date -u +%s)"
		fi
	fi
	if [[ -z "${DATE:-}" ]]; then
		DATE="$(date -u -d "@${SOURCE_DATE_EPOCH}" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null ||
			date -u -r "${SOURCE_DATE_EPOCH}" +%Y-%m-%dT%H:%M:%SZ)"
	fi
	[[ "$VERSION" =~ ^[A-Za-z0-9._+-]+$ ]] || die "version ${VERSION@Q} may hold only letters, digits and . _ + -"
	export VERSION COMMIT DATE SOURCE_DATE_EPOCH
}

# go_build OUTDIR GOOS GOARCH PKG... builds static, trimmed, stamped binaries
# into OUTDIR (one file per main package, named after its directory).
go_build() {
	local out="$1" goos="$2" goarch="$3"
	shift 3
	local ldflags="-s -w -X ${VERSION_PKG}.Version=${VERSION} -X ${VERSION_PKG}.Commit=${COMMIT} -X ${VERSION_PKG}.Date=${DATE}"
	mkdir -p "$out"
	note "building $* for ${goos}/${goarch} (${VERSION})"
	(cd "$REPO_ROOT" && CGO_ENABLED=0 GOOS="$goos" GOARCH="$goarch" \
		go build -trimpath -ldflags "$ldflags" -o "$out/" "$@")
}

# build_main NAME PKG... parses the common flags of build-edge.sh and
# build-control-plane.sh and builds PKGs for each platform into OUT/GOOS_GOARCH/.
build_main() {
	local name="$1"
	shift
	local pkgs=()
	while [[ $# -gt 0 && "$1" != -- ]]; do
		pkgs+=("$1")
		shift
	done
	[[ $# -gt 0 ]] && shift
	local out="$REPO_ROOT/dist" platforms="${PLATFORMS:-$DEFAULT_PLATFORMS}"
	while [[ $# -gt 0 ]]; do
		case "$1" in
		--out) out="${2:?--out needs a directory}"; shift 2 ;;
		--out=*) out="${1#*=}"; shift ;;
		--platforms) platforms="${2:?--platforms needs a list}"; shift 2 ;;
		--platforms=*) platforms="${1#*=}"; shift ;;
		--version) VERSION="${2:?--version needs a value}"; shift 2 ;;
		--version=*) VERSION="${1#*=}"; shift ;;
		-h | --help)
			cat <<USAGE
Usage: $name [--out DIR] [--platforms "OS/ARCH ..."] [--version V]

Builds static (CGO_ENABLED=0), -trimpath binaries of ${pkgs[*]}
into DIR/OS_ARCH/ (default DIR: $REPO_ROOT/dist), stamped with
${VERSION_PKG}.{Version,Commit,Date}.

  --platforms   default "$DEFAULT_PLATFORMS" (or \$PLATFORMS)
  --version     default \$VERSION, else git describe, else "dev"
Environment: VERSION, COMMIT, DATE, SOURCE_DATE_EPOCH override the identity.
USAGE
			exit 0
			;;
		*) die "unknown argument ${1@Q} (see --help)" ;;
		esac
	done
	command -v go >/dev/null || die "go is not on PATH"
	case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
	detect_identity
	local p
	for p in $platforms; do
		[[ "$p" == */* ]] || die "platform ${p@Q} is not OS/ARCH"
		go_build "$out/${p%/*}_${p#*/}" "${p%/*}" "${p#*/}" "${pkgs[@]}"
	done
}
