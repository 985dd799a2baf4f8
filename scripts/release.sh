#!/usr/bin/env bash
# Build a release: per platform an edge tarball and a control-plane tarball,
# the standalone installer, and SHA256SUMS over all of them. See --help.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
	cat <<USAGE
Usage: release.sh VERSION [--out DIR] [--platforms "OS/ARCH ..."] [--edge-only]

Builds, for each platform (default "$DEFAULT_PLATFORMS"):
  nkudo-edge_VERSION_OS_ARCH.tar.gz  nkudo-edge, its systemd unit, sysusers/tmpfiles
                                     snippets, a sample config, install-edge.sh, README
  nkudo_VERSION_OS_ARCH.tar.gz       nkudo and nkudoctl, the control-plane unit, a
                                     sample config, health-check.sh, README
                                     (not with --edge-only)
plus install-edge.sh and SHA256SUMS, into DIR (default $REPO_ROOT/dist/VERSION).
Tarballs are reproducible: same commit, same bytes (SOURCE_DATE_EPOCH = commit time).
USAGE
}

VERSION=""
out=""
platforms="${PLATFORMS:-$DEFAULT_PLATFORMS}"
edge_only=false
while [[ $# -gt 0 ]]; do
	case "$1" in
	--out) out="${2:?--out needs a directory}"; shift 2 ;;
	--out=*) out="${1#*=}"; shift ;;
	--platforms) platforms="${2:?--platforms needs a list}"; shift 2 ;;
	--platforms=*) platforms="${1#*=}"; shift ;;
	--edge-only) edge_only=true; shift ;;
	-h | --help) usage; exit 0 ;;
	-*) die "unknown flag ${1@Q} (see --help)" ;;
	*)
		[[ -z "$VERSION" ]] || die "more than one VERSION given"
		VERSION="$1"
		shift
		;;
	esac
done
[[ -n "$VERSION" ]] || { usage >&2; exit 2; }
command -v go >/dev/null || die "go is not on PATH"
command -v tar >/dev/null || die "tar is not on PATH"
tar --version 2>/dev/null | grep -q 'GNU tar' || die "GNU tar is needed for reproducible tarballs"
if command -v sha256sum >/dev/null; then
	sha256() { sha256sum "$@"; }
elif command -v shasum >/dev/null; then
	sha256() { shasum -a 256 "$@"; }
else
	die "neither sha256sum nor shasum is on PATH"
fi

detect_identity
out="${out:-$REPO_ROOT/dist/$VERSION}"
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
if in_git && [[ -n "$(git -C "$REPO_ROOT" status --porcelain --untracked-files=no 2>/dev/null)" ]]; then
	note "warning: the working tree has uncommitted changes; this is not a clean release of ${COMMIT}"
fi

rm -rf "$out"
mkdir -p "$out"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT

# pack DIRNAME: a reproducible tar.gz of $build/stage/DIRNAME into $out.
pack() {
	local name="$1"
	(cd "$build/stage" && tar --sort=name --format=gnu --owner=0 --group=0 --numeric-owner \
		--mtime="@${SOURCE_DATE_EPOCH}" -cf - "$name") | gzip -9 -n >"$out/$name.tar.gz"
	note "wrote $out/$name.tar.gz"
}

readme() { # readme TITLE BODY-FILE
	printf '# %s %s\n\nBuilt from commit %s on %s.\n\n' "$1" "$VERSION" "$COMMIT" "$DATE"
	cat "$2"
}

deploy="$REPO_ROOT/deploy"
for p in $platforms; do
	[[ "$p" == */* ]] || die "platform ${p@Q} is not OS/ARCH"
	goos="${p%/*}" goarch="${p#*/}"
	bin="$build/bin/${goos}_${goarch}"

	go_build "$bin" "$goos" "$goarch" ./cmd/nkudo-edge
	d="nkudo-edge_${VERSION}_${goos}_${goarch}"
	s="$build/stage/$d"
	install -d -m 0755 "$s"
	install -m 0755 "$bin/nkudo-edge" "$s/nkudo-edge"
	install -m 0755 "$REPO_ROOT/scripts/install-edge.sh" "$s/install-edge.sh"
	install -m 0644 "$deploy/systemd/nkudo-edge.service" "$s/nkudo-edge.service"
	install -m 0644 "$deploy/nkudo-edge.env.sample" "$s/nkudo-edge.env.sample"
	install -m 0644 "$deploy/sysusers.d/nkudo-edge.conf" "$s/nkudo-edge.sysusers.conf"
	install -m 0644 "$deploy/tmpfiles.d/nkudo-edge.conf" "$s/nkudo-edge.tmpfiles.conf"
	readme "n-kudo edge agent" "$deploy/README.edge.md" >"$s/README.md"
	chmod 0644 "$s/README.md"
	pack "$d"

	if ! $edge_only; then
		go_build "$bin" "$goos" "$goarch" ./cmd/nkudo ./cmd/nkudoctl
		d="nkudo_${VERSION}_${goos}_${goarch}"
		s="$build/stage/$d"
		install -d -m 0755 "$s"
		install -m 0755 "$bin/nkudo" "$s/nkudo"
		install -m 0755 "$bin/nkudoctl" "$s/nkudoctl"
		install -m 0644 "$deploy/systemd/nkudo.service" "$s/nkudo.service"
		install -m 0644 "$deploy/nkudo.env.sample" "$s/nkudo.env.sample"
		install -m 0644 "$deploy/sysusers.d/nkudo.conf" "$s/nkudo.sysusers.conf"
		install -m 0755 "$REPO_ROOT/scripts/health-check.sh" "$s/health-check.sh"
		install -d -m 0755 "$s/prometheus" "$s/grafana"
		install -m 0644 "$deploy/prometheus/alerts.yaml" "$deploy/prometheus/alerts_test.yaml" "$s/prometheus/"
		install -m 0644 "$deploy/grafana/nkudo.json" "$s/grafana/nkudo.json"
		readme "n-kudo control plane" "$deploy/README.control-plane.md" >"$s/README.md"
		chmod 0644 "$s/README.md"
		pack "$d"
	fi
done
install -m 0755 "$REPO_ROOT/scripts/install-edge.sh" "$out/install-edge.sh"

(cd "$out" && sha256 -- *.tar.gz install-edge.sh >SHA256SUMS)
note "wrote $out/SHA256SUMS"
cat "$out/SHA256SUMS"
