#!/usr/bin/env bash
# Build the static control plane (nkudo) and user CLI (nkudoctl) for every
# release platform into dist/OS_ARCH/. See --help.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build_main build-control-plane.sh ./cmd/nkudo ./cmd/nkudoctl -- "$@"
