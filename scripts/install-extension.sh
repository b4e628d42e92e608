#!/usr/bin/env bash
# Installs pg_authaudit into a PostgreSQL 15 installation without disturbing
# a server that runs from it (docs/installation.md, "Installing safely").
#
#   install-extension.sh [--release] [--pg-config PATH] [--no-build] [--root DIR]
#
# The extension is built into a staging directory first (`cargo pgrx
# package`); every file is then written beside its destination and renamed
# over it. A rename never changes a file a running server has mapped: its
# processes keep the old library until they restart, and nothing ever
# loads a half-written one. Besides the current version's install script,
# every upgrade script in sql/ is installed, so that `ALTER EXTENSION
# pg_authaudit UPDATE` finds its path from any earlier release. The install
# scripts of earlier releases are not installed: a database is created at
# the current release only (tests/fixtures/ keeps them for the upgrade tests).
# --root DIR lays the same files out under DIR (a package's tree) instead.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
profile=debug
build=1
root=
while [ $# -gt 0 ]; do
  case "$1" in
    --release) profile=release ;;
    --no-build) build=0 ;;  # install the staging directory of the last build again
    --pg-config) PG_CONFIG=$2; shift ;;
    --root) root=$2; shift ;;
    *) echo "install-extension.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

stage="target/install-stage-$profile"
if [ "$build" = 1 ]; then
  rm -rf "$stage"
  flags=(--pg-config "$PG_CONFIG" --out-dir "$stage")
  [ "$profile" = debug ] && flags+=(--debug)
  cargo pgrx package -p pg_authaudit "${flags[@]}" >&2
fi
[ -d "$stage" ] || { echo "install-extension.sh: no staging directory $stage (build first)" >&2; exit 1; }

pkglibdir=$("$PG_CONFIG" --pkglibdir)
extdir="$("$PG_CONFIG" --sharedir)/extension"

# Copies $1 to directory $2 under the same name: written beside, then renamed.
put() {
  local src=$1 dir=$2 name tmp
  name=$(basename "$src")
  tmp="$dir/.$name.installing.$$"
  install -m 0644 "$src" "$tmp"
  mv -f "$tmp" "$dir/$name"
  printf 'install-extension: %s\n' "$dir/$name" >&2
}

install -d "$root$pkglibdir" "$root$extdir"
put "$(find "$stage" -name 'pg_authaudit.so' -path "*$pkglibdir*" | head -n 1)" "$root$pkglibdir"
for f in "$stage$extdir"/pg_authaudit*; do
  put "$f" "$root$extdir"
done
for f in sql/pg_authaudit--*--*.sql; do
  put "$f" "$root$extdir"
done
# The install script of another release (an earlier install's) goes: a
# database is only ever created at the release installed.
current=$(basename "$(find "$stage$extdir" -name 'pg_authaudit--*.sql' ! -name '*--*--*' | head -n 1)")
[ "$current" != . ] || { echo "install-extension.sh: no install script in $stage" >&2; exit 1; }
for f in "$root$extdir"/pg_authaudit--*.sql; do
  case "$(basename "$f")" in
    *--*--*|"$current") ;;
    *) rm -f "$f"; printf 'install-extension: removed %s\n' "$f" >&2 ;;
  esac
done
