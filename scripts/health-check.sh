#!/usr/bin/env bash
# Probe a control plane's operational endpoints from outside, for monitoring
# (cron, a load balancer check, Nagios/Icinga-style exit codes). See --help.
# For a deeper check from the control-plane host itself use `nkudo admin health`.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: health-check.sh [--url URL] [--cacert FILE | --insecure] [--timeout SECONDS] [--quiet]

Checks, against the control plane at URL (default $NKUDO_URL, else https://127.0.0.1:8443):
  /healthz   the process answers            (must be 200)
  /readyz    the database is reachable      (must be 200)
  /metrics   Prometheus metrics are served  (must be 200 with nkudo_ metrics)
Exit status: 0 all good, 1 metrics missing (warning), 2 not healthy or not ready (critical),
3 bad usage.
  --cacert FILE   the n-kudo CA to verify the server with (dev CA: <data-dir>/pki/ca.crt)
  --insecure      do not verify the server certificate
USAGE
}

url="${NKUDO_URL:-https://127.0.0.1:8443}" timeout=5 quiet=false
tls=()
while [[ $# -gt 0 ]]; do
	case "$1" in
	--url) url="${2:?--url needs a value}"; shift 2 ;;
	--url=*) url="${1#*=}"; shift ;;
	--cacert) tls=(--cacert "${2:?--cacert needs a file}"); shift 2 ;;
	--cacert=*) tls=(--cacert "${1#*=}"); shift ;;
	--insecure) tls=(--insecure); shift ;;
	--timeout) timeout="${2:?--timeout needs seconds}"; shift 2 ;;
	--timeout=*) timeout="${1#*=}"; shift ;;
	--quiet) quiet=true; shift ;;
	-h | --help) usage; exit 0 ;;
	*) printf 'health-check.sh: unknown argument %q (see --help)\n' "$1" >&2; exit 3 ;;
	esac
done
command -v curl >/dev/null || { echo "health-check.sh: curl is not installed" >&2; exit 3; }
[[ "$timeout" =~ ^[0-9]+$ ]] || { echo "health-check.sh: --timeout must be whole seconds" >&2; exit 3; }
url="${url%/}"

status=0
report() { # report LEVEL MESSAGE
	if ! $quiet || [[ "$1" != OK ]]; then printf '%-8s %s\n' "$1" "$2"; fi
}

# probe PATH: sets code (HTTP status, 000 when unreachable) and body.
probe() {
	local out
	out="$(curl -sS --max-time "$timeout" ${tls[@]+"${tls[@]}"} -w '\n%{http_code}' "$url$1" 2>&1)" || true
	code="${out##*$'\n'}"
	body="${out%$'\n'*}"
	[[ "$code" =~ ^[0-9]{3}$ ]] || { body="$out"; code=000; }
}

for path in /healthz /readyz; do
	probe "$path"
	if [[ "$code" == 200 ]]; then
		report OK "$path"
	else
		report CRITICAL "$path: HTTP $code $(printf '%s' "$body" | head -c 200 | tr '\n' ' ')"
		status=2
	fi
done

probe /metrics
if [[ "$code" == 200 ]] && grep -q '^nkudo_' <<<"$body"; then
	report OK "/metrics"
else
	report WARNING "/metrics: HTTP $code, no nkudo_ metrics"
	if ((status < 1)); then status=1; fi
fi
exit "$status"
