#!/usr/bin/env bash
# Install, upgrade or remove the n-kudo edge agent from a release tarball.
# Idempotent: running it again upgrades the binary and unit and keeps the
# configuration, the enrollment and the running VMs. See --help.
set -euo pipefail

SERVICE=nkudo-edge
USER_NAME=nkudo-edge
BIN=/usr/local/bin/nkudo-edge
UNIT=/etc/systemd/system/nkudo-edge.service
SYSUSERS=/usr/lib/sysusers.d/nkudo-edge.conf
TMPFILES=/usr/lib/tmpfiles.d/nkudo-edge.conf
CONF_DIR=/etc/nkudo-edge
ENV_FILE=/etc/nkudo-edge/nkudo-edge.env
PKI_DIR=/var/lib/nkudo-edge/pki
STATE_DIR=/var/lib/nkudo-edge
RUNBOOKS="docs/runbooks/enrollment-failure.md"

die() { printf 'install-edge.sh: error: %s\n' "$*" >&2; exit 1; }
note() { printf 'install-edge.sh: %s\n' "$*" >&2; }

usage() {
	cat <<'USAGE'
Usage: install-edge.sh [--tarball PATH|URL] [--control-plane URL] [--token T]
                       [--ca-hash sha256:HEX] [--reenroll] [--no-start]
       install-edge.sh --uninstall [--purge]

Installs the n-kudo edge agent from a release tarball (a local path or an
http(s) URL; default: the unpacked release this script sits in), verifying it
against SHA256SUMS when one sits next to it. Creates the nkudo-edge system user
(member of kvm), installs the binary, the hardened systemd unit and the config
(/etc/nkudo-edge/nkudo-edge.env, kept across upgrades), enrolls with the
one-time token when the host is not enrolled yet, then enables and (re)starts
the service. Restarting the agent does not stop its VMs.

  --tarball PATH|URL   release tarball nkudo-edge_VERSION_OS_ARCH.tar.gz
  --control-plane URL  control plane base URL (https://...); stored in the config
  --token T            one-time enrollment token (or env NKUDO_ENROLL_TOKEN)
  --ca-hash sha256:HEX the control plane CA fingerprint printed with the token
  --reenroll           move the current key/certificate aside and enroll again
  --no-start           install and enroll, but do not enable or start the service
  --uninstall          stop and remove program, unit and snippets; keep config,
                       enrollment and state (VM disks)
  --purge              with --uninstall: also stop the VMs, remove config, keys,
                       state and the nkudo-edge user
  --root DIR           install into DIR instead of / (image building, tests):
                       no users are created, nothing is chowned, systemd is not
                       called; sysusers.d/tmpfiles.d create both at boot
  --no-systemd         do not call systemctl (hosts without systemd, tests)
USAGE
}

tarball="" control_plane="" token="${NKUDO_ENROLL_TOKEN:-}" ca_hash=""
root=/ systemd=true start=true uninstall=false purge=false reenroll=false
while [[ $# -gt 0 ]]; do
	case "$1" in
	--tarball) tarball="${2:?--tarball needs a path or URL}"; shift 2 ;;
	--tarball=*) tarball="${1#*=}"; shift ;;
	--control-plane) control_plane="${2:?--control-plane needs a URL}"; shift 2 ;;
	--control-plane=*) control_plane="${1#*=}"; shift ;;
	--token) token="${2:?--token needs a value}"; shift 2 ;;
	--token=*) token="${1#*=}"; shift ;;
	--ca-hash) ca_hash="${2:?--ca-hash needs a value}"; shift 2 ;;
	--ca-hash=*) ca_hash="${1#*=}"; shift ;;
	--root) root="${2:?--root needs a directory}"; shift 2 ;;
	--root=*) root="${1#*=}"; shift ;;
	--reenroll) reenroll=true; shift ;;
	--no-start) start=false; shift ;;
	--no-systemd) systemd=false; shift ;;
	--uninstall) uninstall=true; shift ;;
	--purge) purge=true; shift ;;
	-h | --help) usage; exit 0 ;;
	-*) die "unknown flag ${1@Q} (see --help)" ;;
	*)
		[[ -z "$tarball" ]] || die "more than one tarball given"
		tarball="$1"
		shift
		;;
	esac
done

$purge && ! $uninstall && die "--purge only goes with --uninstall"
[[ -z "$control_plane" || "$control_plane" =~ ^https://[^[:space:]]+$ ]] ||
	die "--control-plane must be an https:// URL, got ${control_plane@Q}"
[[ -z "$ca_hash" || "$ca_hash" =~ ^sha256:[0-9a-f]{64}$ ]] ||
	die "--ca-hash must be sha256: followed by 64 lowercase hex digits, got ${ca_hash@Q}"

# live: installing into the running system, where users and systemd are real.
live=false
if [[ "$root" == / ]]; then
	live=true
	R=""
	[[ "$(id -u)" == 0 ]] || die "run as root (or use --root DIR to stage into a directory)"
else
	mkdir -p "$root"
	R="$(cd "$root" && pwd)"
	systemd=false
fi
if $systemd && { ! command -v systemctl >/dev/null || [[ ! -d /run/systemd/system ]]; }; then
	note "systemd is not running here: not calling systemctl"
	systemd=false
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# as_agent CMD...: run CMD as the agent user on a live system, so the files it
# writes are the agent's; as the caller otherwise.
as_agent() {
	if $live; then
		setpriv --reuid="$USER_NAME" --regid="$USER_NAME" --init-groups -- "$@"
	else
		"$@"
	fi
}

# set_env KEY VALUE FILE: replace KEY's line in FILE, else the sample's
# commented-out "#KEY=" line, else append one.
set_env() {
	local key="$1" value="$2" file="$3" tmp
	tmp="$(mktemp "$file.XXXXXX")"
	awk -v k="$key" -v v="$value" '
		{ lines[NR] = $0 }
		$0 ~ "^"k"=" { if (!set) set = NR }
		$0 ~ "^#"k"=" { if (!commented) commented = NR }
		END {
			at = set ? set : commented
			for (i = 1; i <= NR; i++) {
				if (i == at) print k"="v
				else if (!(set && i != set && lines[i] ~ "^"k"=")) print lines[i]
			}
			if (!at) print k"="v
		}' "$file" >"$tmp"
	chmod --reference="$file" "$tmp"
	mv -f "$tmp" "$file"
}

get_env() { # get_env KEY FILE: the value of KEY's last line, or nothing
	[[ -f "$2" ]] || return 0
	awk -F= -v k="$1" '$1 == k { sub(/^[^=]*=/, ""); v=$0 } END { print v }' "$2"
}

# enrolled: the agent keeps agent.key, agent.crt, ca.crt and identity.json in its PKI dir.
enrolled() { [[ -f "$R$PKI_DIR/agent.crt" ]]; }

sha256_of() {
	if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

fetch() { # fetch URL DEST
	if command -v curl >/dev/null; then
		curl -fsSL --retry 3 -o "$2" "$1"
	elif command -v wget >/dev/null; then
		wget -q -O "$2" "$1"
	else
		die "neither curl nor wget is installed to fetch $1"
	fi
}

# verify FILE SUMS NAME: check FILE against NAME's line in SUMS.
verify() {
	local want got
	want="$(awk -v n="$3" '$2 == n || $2 == "*"n { print $1 }' "$2")"
	[[ -n "$want" ]] || die "$3 is not listed in SHA256SUMS"
	got="$(sha256_of "$1")"
	[[ "$want" == "$got" ]] || die "checksum mismatch for $3: SHA256SUMS says $want, the file is $got"
	note "checksum of $3 verified"
}

# unpack: set src to a directory holding the release files.
unpack() {
	local name
	if [[ -z "$tarball" ]]; then
		src="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
		[[ -f "$src/nkudo-edge" && -f "$src/nkudo-edge.service" ]] ||
			die "no --tarball given and $src is not an unpacked release"
		return
	fi
	name="$(basename "${tarball%%\?*}")"
	case "$tarball" in
	http://* | https://*)
		note "downloading $tarball"
		fetch "$tarball" "$work/$name" || die "download of $tarball failed"
		if fetch "${tarball%/*}/SHA256SUMS" "$work/SHA256SUMS" 2>/dev/null; then
			verify "$work/$name" "$work/SHA256SUMS" "$name"
		else
			note "warning: no SHA256SUMS next to $tarball; not verified"
		fi
		tarball="$work/$name"
		;;
	*)
		[[ -f "$tarball" ]] || die "tarball $tarball does not exist"
		if [[ -f "$(dirname "$tarball")/SHA256SUMS" ]]; then
			verify "$tarball" "$(dirname "$tarball")/SHA256SUMS" "$name"
		fi
		;;
	esac
	mkdir "$work/x"
	tar -xzf "$tarball" -C "$work/x" || die "cannot unpack $tarball"
	src="$(find "$work/x" -mindepth 2 -maxdepth 2 -name nkudo-edge -type f -printf '%h\n' | head -n1)"
	[[ -n "$src" && -f "$src/nkudo-edge.service" ]] || die "$tarball is not an nkudo-edge release tarball"
}

ensure_user() {
	if ! $live; then
		return
	fi
	getent group kvm >/dev/null || groupadd --system kvm
	if ! getent passwd "$USER_NAME" >/dev/null; then
		useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
			--shell /usr/sbin/nologin --comment "n-kudo edge agent" --groups kvm "$USER_NAME"
		note "created system user $USER_NAME"
	elif ! id -nG "$USER_NAME" | tr ' ' '\n' | grep -qx kvm; then
		usermod --append --groups kvm "$USER_NAME"
	fi
}

own() { # own MODE DIR: create DIR owned by the agent user (on a live system)
	install -d -m "$1" "$R$2"
	chmod "$1" "$R$2"
	if $live; then chown "$USER_NAME:$USER_NAME" "$R$2"; fi
}

do_install() {
	unpack
	# A binary for the wrong architecture fails here, before anything changes.
	if $live || [[ "$(uname -s)" == Linux ]]; then
		"$src/nkudo-edge" version >/dev/null 2>&1 ||
			die "$src/nkudo-edge does not run on this host ($(uname -m)): pick the tarball for this architecture (or, if $work is on a noexec mount, set TMPDIR to another directory)"
	fi
	ensure_user

	install -D -m 0755 "$src/nkudo-edge" "$R$BIN"
	install -D -m 0644 "$src/nkudo-edge.service" "$R$UNIT"
	install -D -m 0644 "$src/nkudo-edge.sysusers.conf" "$R$SYSUSERS"
	install -D -m 0644 "$src/nkudo-edge.tmpfiles.conf" "$R$TMPFILES"
	install -d -m 0755 "$R$CONF_DIR"
	if [[ ! -f "$R$ENV_FILE" ]]; then
		install -m 0600 "$src/nkudo-edge.env.sample" "$R$ENV_FILE"
		note "created $ENV_FILE"
	fi
	if [[ -n "$control_plane" ]]; then
		set_env NKUDO_CONTROL_PLANE "$control_plane" "$R$ENV_FILE"
	fi
	control_plane="$(get_env NKUDO_CONTROL_PLANE "$R$ENV_FILE")"
	own 0750 "$STATE_DIR"
	own 0700 "$PKI_DIR"
	note "installed $("$R$BIN" version 2>/dev/null | head -n1 || echo nkudo-edge) into ${R:-/}"

	local aside=""
	if $reenroll && enrolled; then
		[[ -n "$token" ]] || die "--reenroll needs --token"
		aside="$R$PKI_DIR.before-reenroll.$(date -u +%Y%m%dT%H%M%SZ)"
		mv "$R$PKI_DIR" "$aside"
		own 0700 "$PKI_DIR"
		note "moved the previous enrollment to $aside"
	fi
	if enrolled; then
		[[ -z "$token" ]] || note "already enrolled ($PKI_DIR/agent.crt exists): ignoring --token (use --reenroll to enroll again)"
	elif [[ -n "$token" ]]; then
		[[ -n "$ca_hash" ]] || die "enrolling needs --ca-hash (the CA fingerprint printed with the token)"
		[[ "$control_plane" == https://* ]] ||
			die "enrolling needs --control-plane (none set in $ENV_FILE)"
		note "enrolling with $control_plane"
		if ! as_agent "$R$BIN" enroll --control-plane "$control_plane" --token "$token" \
			--ca-hash "$ca_hash" --pki-dir "$R$PKI_DIR"; then
			if [[ -n "$aside" ]]; then
				# A failed re-enrollment must not leave the host without any identity.
				rm -rf "$R$PKI_DIR"
				mv "$aside" "$R$PKI_DIR"
				note "restored the previous enrollment"
			fi
			die "enrollment failed; the program and config are installed, rerun with a fresh token (see $RUNBOOKS)"
		fi
	else
		note "not enrolled yet: rerun with --token T --ca-hash sha256:... --control-plane URL"
	fi

	if $systemd; then
		systemctl daemon-reload
		if ! $start; then
			note "--no-start: not enabling $SERVICE"
		elif enrolled; then
			systemctl enable --quiet "$SERVICE.service"
			# restart, not start: an upgrade must run the new binary. The VMs survive (KillMode=process).
			systemctl restart "$SERVICE.service"
			note "$SERVICE is running: journalctl -u $SERVICE -f"
		else
			note "not starting $SERVICE until the host is enrolled"
		fi
	fi
}

do_uninstall() {
	if $systemd && systemctl cat "$SERVICE.service" >/dev/null 2>&1; then
		if $purge && systemctl is-active --quiet "$SERVICE.service"; then
			# The VMs are the agent's children: signal the whole unit, not just the agent.
			systemctl kill --signal=SIGTERM "$SERVICE.service" || true
		fi
		systemctl disable --now --quiet "$SERVICE.service" || true
	fi
	rm -f "$R$BIN" "$R$UNIT" "$R$SYSUSERS" "$R$TMPFILES"
	if $systemd; then
		systemctl daemon-reload
	fi
	if $purge; then
		rm -rf "$R$CONF_DIR" "$R$STATE_DIR"
		if $live && getent passwd "$USER_NAME" >/dev/null; then
			userdel "$USER_NAME" || note "warning: could not remove user $USER_NAME"
		fi
		note "removed nkudo-edge with its configuration, enrollment and state"
	else
		note "removed nkudo-edge; kept $CONF_DIR and $STATE_DIR (--purge removes them)"
		if $live && pgrep -u "$USER_NAME" -x cloud-hypervisor >/dev/null 2>&1; then
			note "warning: VMs of $USER_NAME are still running (pgrep -u $USER_NAME cloud-hypervisor)"
		fi
	fi
}

if $uninstall; then
	do_uninstall
else
	do_install
fi
