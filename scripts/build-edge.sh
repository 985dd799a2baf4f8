#!/usr/bin/env bash
# Build the static edge agent (nkudo-edge) for every release platform into
# dist/OS_ARCH/. See --help.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
build_main build-edge.sh ./cmd/nkudo-edge -- "$@"
