#!/usr/bin/env bash
# Installs everything pg_authaudit's build, tests and benchmarks need on a
# Debian 12 machine. Idempotent, and quick when everything is already there.
# Uses only Debian packages and crates.io.
set -euo pipefail

PGRX_VERSION=0.18.0
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
APT_PACKAGES=(
  postgresql-15 postgresql-server-dev-15 postgresql-client-15
  postgresql-15-pgaudit postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl
  libclang-dev clang pkg-config sudo python3 python3-pip ca-certificates chromium
)

log() { printf 'setup: %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! python3 -c "import jwt" 2>/dev/null; then
  log "installing PyJWT (independent JWT issuer for the token tests and the demo)"
  python3 -m pip install --quiet PyJWT==2.10.1 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages PyJWT==2.10.1
fi
if ! python3 -c "import pycef" 2>/dev/null; then
  log "installing pycef (an independent CEF parser the tests use)"
  python3 -m pip install --quiet pycef==1.11 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages pycef==1.11
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
