#!/usr/bin/env bash
# Site operations over the control plane's API that an operator runs by hand
# when enrolling or repairing an edge: create a one-time enrollment token,
# set a site's NetBird setup key. See --help.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: nkudo-site.sh token SITE [--ttl DURATION] [--create]
       nkudo-site.sh netbird SITE --setup-key-file FILE [--management-url URL]

  token     create a one-time enrollment token for SITE (default TTL 1h, at
            most what the server allows) and print the token, the CA
            fingerprint and the install-edge.sh command for the edge host;
            --create registers SITE first when it does not exist yet
  netbird   store SITE's NetBird setup key (read from FILE, never from the
            command line) and management URL; an empty FILE clears the key.
            The agent stores it at its next certificate renewal and runs
            `netbird up` with it when it next starts.

Connection, as for nkudoctl (flags override the environment):
  --server URL     $NKUDO_SERVER     control plane URL
  --ca-file FILE   $NKUDO_CA_FILE    PEM bundle that verifies the server
  --tenant T       $NKUDO_TENANT     tenant, when the token is an admin token
                   $NKUDO_TOKEN      API token (environment only: it would show in `ps`)
USAGE
}

die() { printf 'nkudo-site.sh: error: %s\n' "$*" >&2; exit 1; }

[[ $# -ge 1 ]] || { usage >&2; exit 2; }
case "$1" in -h | --help) usage; exit 0 ;; esac
cmd="$1"
shift
[[ "$cmd" == token || "$cmd" == netbird ]] || die "unknown command ${cmd@Q} (see --help)"
[[ $# -ge 1 && "$1" != -* ]] || die "$cmd needs a SITE"
site="$1"
shift
[[ "$site" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] || die "site ${site@Q} is not a DNS label"

server="${NKUDO_SERVER:-}" ca_file="${NKUDO_CA_FILE:-}" tenant="${NKUDO_TENANT:-}"
ttl="" create=false key_file="" mgmt_url=""
while [[ $# -gt 0 ]]; do
	case "$1" in
	--server) server="${2:?--server needs a URL}"; shift 2 ;;
	--server=*) server="${1#*=}"; shift ;;
	--ca-file) ca_file="${2:?--ca-file needs a file}"; shift 2 ;;
	--ca-file=*) ca_file="${1#*=}"; shift ;;
	--tenant) tenant="${2:?--tenant needs a value}"; shift 2 ;;
	--tenant=*) tenant="${1#*=}"; shift ;;
	--ttl) ttl="${2:?--ttl needs a duration}"; shift 2 ;;
	--ttl=*) ttl="${1#*=}"; shift ;;
	--create) create=true; shift ;;
	--setup-key-file) key_file="${2:?--setup-key-file needs a file}"; shift 2 ;;
	--setup-key-file=*) key_file="${1#*=}"; shift ;;
	--management-url) mgmt_url="${2:?--management-url needs a URL}"; shift 2 ;;
	--management-url=*) mgmt_url="${1#*=}"; shift ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument ${1@Q} (see --help)" ;;
	esac
done
[[ -n "$server" ]] || die "no control plane: set NKUDO_SERVER or --server"
[[ -n "${NKUDO_TOKEN:-}" ]] || die "no API token: set NKUDO_TOKEN"
[[ -z "$ca_file" || -r "$ca_file" ]] || die "CA file $ca_file is not readable"
[[ -z "$ttl" || "$ttl" =~ ^([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+$ ]] || die "--ttl ${ttl@Q} is not a duration such as 90m or 2h"
command -v curl >/dev/null || die "curl is not installed"
server="${server%/}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# The token goes to curl in a header file, not on its command line.
umask 077
printf 'Authorization: Bearer %s\n' "$NKUDO_TOKEN" >"$work/headers"
if [[ -n "$tenant" ]]; then printf 'Nkudo-Tenant: %s\n' "$tenant" >>"$work/headers"; fi
printf 'Content-Type: application/json\n' >>"$work/headers"

# api METHOD PATH [BODY-FILE]: prints the response body; fails on non-2xx
# with the server's error message.
api() {
	local args=(-sS -X "$1" -H "@$work/headers" -o "$work/body" -w '%{http_code}')
	[[ -n "$ca_file" ]] && args+=(--cacert "$ca_file")
	[[ $# -ge 3 ]] && args+=(--data-binary "@$3")
	local code
	code="$(curl "${args[@]}" "$server$2")" || die "request to $server$2 failed"
	if [[ "$code" != 2?? ]]; then
		local msg
		msg="$(sed -n 's/.*"message":"\([^"]*\)".*/\1/p' "$work/body")"
		die "$1 $2: HTTP $code: ${msg:-$(head -c 300 "$work/body")}"
	fi
	cat "$work/body"
}

field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }

case "$cmd" in
token)
	if $create; then
		printf '{"name":"%s"}' "$site" >"$work/site.json"
		# A subshell: api exits on an error answer, and 404 is the expected one here.
		if ! (api GET "/v1/sites/$site") >/dev/null 2>&1; then
			api POST /v1/sites "$work/site.json" >/dev/null
			echo "created site $site"
		fi
	fi
	if [[ -n "$ttl" ]]; then printf '{"ttl":"%s"}' "$ttl" >"$work/req.json"; else printf '{}' >"$work/req.json"; fi
	resp="$(api POST "/v1/sites/$site/enrollment-tokens" "$work/req.json")"
	token="$(field token <<<"$resp")"
	fp="$(field caFingerprint <<<"$resp")"
	expires="$(field expiresAt <<<"$resp")"
	cp_url="$(field command <<<"$resp" | sed -n 's/.*--control-plane \([^ ]*\).*/\1/p')"
	[[ -n "$token" && -n "$fp" ]] || die "unexpected answer from the server: $resp"
	cat <<OUT
site:      $site
token:     $token
expires:   $expires (single use)
ca-hash:   $fp

On the edge host, as root, from the unpacked release (or with --tarball PATH|URL):
  ./install-edge.sh --control-plane ${cp_url:-$server} --token $token --ca-hash $fp
OUT
	;;
netbird)
	[[ -n "$key_file" ]] || die "netbird needs --setup-key-file FILE"
	[[ -r "$key_file" ]] || die "setup key file $key_file is not readable"
	[[ -z "$mgmt_url" || "$mgmt_url" =~ ^https?://[^[:space:]\"]+$ ]] || die "--management-url must be an http(s) URL"
	key="$(tr -d '[:space:]' <"$key_file")"
	[[ "$key" =~ ^[A-Za-z0-9._-]*$ ]] || die "the setup key in $key_file holds unexpected characters"
	printf '{"managementUrl":"%s","setupKey":"%s"}' "$mgmt_url" "$key" >"$work/req.json"
	api PUT "/v1/sites/$site/netbird" "$work/req.json" >/dev/null
	if [[ -n "$key" ]]; then
		echo "NetBird setup key stored for site $site${mgmt_url:+ (management $mgmt_url)}; the agent stores it at its next certificate renewal and joins when it next starts"
	else
		echo "NetBird setup key cleared for site $site"
	fi
	;;
esac
