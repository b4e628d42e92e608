#!/usr/bin/env bash
# Builds the two Debian packages of pg_authaudit (docs/installation.md,
# "Packages"):
#
#   postgresql-15-pg-authaudit  the extension: the library, this
#                               release's install script and every upgrade
#                               script
#   authaudit-sidecar           authaudit-sidecar, authaudit-import,
#                               authaudit-mongowire (a MongoDB-wire server for
#                               development and tests), the systemd unit, a
#                               sample configuration and the docs
#
#   package.sh [--debug] [--no-build] [--out DIR]
#
# --debug packages the debug build (what the tests use); --no-build packages
# the last build (the extension's staging directory of
# scripts/install-extension.sh and target/<profile>/). Writes
# DIR/<name>_<version>_<arch>.deb (default DIR: target/debian) and prints
# their paths.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
profile=release
build=1
out=target/debian
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug ;;
    --no-build) build=0 ;;
    --out) out=$2; shift ;;
    *) echo "package.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

target=${CARGO_TARGET_DIR:-target}
if [ "$build" = 1 ]; then
  cargo_flags=(-p sidecar -p authaudit-demo -p authaudit-mongowire --bins)
  [ "$profile" = release ] && cargo_flags+=(--release)
  cargo build "${cargo_flags[@]}" >&2
fi

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# control NAME DIR DEPENDS DESCRIPTION: DIR/DEBIAN/control.
control() {
  mkdir -p "$2/DEBIAN"
  cat >"$2/DEBIAN/control" <<EOF
Package: $1
Version: $version
Architecture: $arch
Maintainer: pg_authaudit maintainers <security@pg-authaudit.invalid>
Section: database
Priority: optional
Depends: $3
Installed-Size: $(du -sk "$2" | cut -f1)
Homepage: https://github.com/pg-authaudit/pg_authaudit
Description: $4
EOF
}

# The extension: what scripts/install-extension.sh installs, laid out in
# the package's tree by that script (it builds the staging directory too).
ext="$work/postgresql-15-pg-authaudit"
install_flags=(--pg-config "$PG_CONFIG" --root "$ext")
[ "$profile" = release ] && install_flags+=(--release)
[ "$build" = 0 ] && install_flags+=(--no-build)
scripts/install-extension.sh "${install_flags[@]}"
install -d "$ext/usr/share/doc/postgresql-15-pg-authaudit"
install -m 0644 README.md docs/installation.md docs/configuration.md docs/sql-reference.md \
  docs/errors.md docs/security.md "$ext/usr/share/doc/postgresql-15-pg-authaudit/"
control postgresql-15-pg-authaudit "$ext" "postgresql-15, libc6" \
  "tamper-evident authentication event log for PostgreSQL 15
 pg_authaudit records authentication events through SQL functions, chains
 them per tenant (SHA-256, SHA-512, SHA3-256), keeps lockout state in the
 same transaction and isolates tenants by row-level security. Add
 pg_authaudit to shared_preload_libraries, restart, then CREATE EXTENSION."
cat >"$ext/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  echo "pg_authaudit: add pg_authaudit to shared_preload_libraries and restart PostgreSQL;"
  echo "  then CREATE EXTENSION pg_authaudit (new) or ALTER EXTENSION pg_authaudit UPDATE (upgrade)."
fi
EOF
chmod 0755 "$ext/DEBIAN/postinst"

# The sidecar and its tools.
side="$work/authaudit-sidecar"
install -d "$side/usr/bin" "$side/lib/systemd/system" "$side/etc/authaudit" \
  "$side/usr/share/doc/authaudit-sidecar"
for bin in authaudit-sidecar authaudit-import authaudit-mongowire; do
  [ -x "$target/$profile/$bin" ] || { echo "package.sh: $target/$profile/$bin is not built" >&2; exit 1; }
  install -m 0755 "$target/$profile/$bin" "$side/usr/bin/$bin"
done
install -m 0644 packaging/authaudit-sidecar.service "$side/lib/systemd/system/"
install -m 0644 packaging/sidecar.toml "$side/etc/authaudit/sidecar.toml"
install -m 0640 packaging/sidecar.env "$side/etc/authaudit/sidecar.env"
install -m 0644 docs/sidecar.md docs/import.md "$side/usr/share/doc/authaudit-sidecar/"
control authaudit-sidecar "$side" "libc6, adduser" \
  "mirror and tools of pg_authaudit
 authaudit-sidecar streams pg_authaudit's log from PostgreSQL logical
 replication into MongoDB and checks it (verify, witness-check); the
 package also holds authaudit-import (sshd and PAM logs), a MongoDB-wire
 server for development, a systemd unit and a sample configuration."
printf '/etc/authaudit/sidecar.toml\n/etc/authaudit/sidecar.env\n' >"$side/DEBIAN/conffiles"
cat >"$side/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
# DPKG_ROOT: installed into another root (dpkg --instdir with
# --force-script-chrootless): no user is created there.
if [ "$1" = configure ]; then
  if [ -z "${DPKG_ROOT:-}" ]; then
    if ! getent passwd authaudit >/dev/null; then
      adduser --system --group --home /var/lib/authaudit --no-create-home authaudit >/dev/null
    fi
    chgrp authaudit /etc/authaudit/sidecar.env
    chmod 0640 /etc/authaudit/sidecar.env
    if [ -d /run/systemd/system ]; then
      systemctl daemon-reload >/dev/null || true
    fi
  fi
  echo "authaudit-sidecar: edit /etc/authaudit/sidecar.toml and sidecar.env, then"
  echo "  systemctl enable --now authaudit-sidecar"
fi
EOF
cat >"$side/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
EOF
chmod 0755 "$side/DEBIAN/postinst" "$side/DEBIAN/postrm"

for dir in "$ext" "$side"; do
  name=$(basename "$dir")
  deb="$out/${name}_${version}_${arch}.deb"
  # A debug build's binaries are large and only tested: not compressed.
  compress=(-Zxz)
  [ "$profile" = debug ] && compress=(-Znone)
  dpkg-deb --root-owner-group "${compress[@]}" --build "$dir" "$deb" >&2
  echo "$deb"
done
