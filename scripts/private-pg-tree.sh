#!/usr/bin/env bash
# A private copy of a PostgreSQL installation tree for `cargo pgrx test`,
# which installs the build it tests into the tree of its pg_config by
# writing the library in place: a server running from the system's tree
# and preloading pg_authaudit would map a file being rewritten, and crash.
# PostgreSQL's trees are relocatable (pg_config and the server find their
# directories relative to their own binary), so a copy under DIR serves
# cargo pgrx test as the original would.
#
#   private-pg-tree.sh PG_CONFIG DIR
#
# Copies the server's binaries, libraries, shared files and server headers
# under DIR/root (refreshed on every run), and writes DIR/pgrx-home/config.toml
# naming the copy's pg_config for pg15 (rewritten only when it changes:
# pgrx's build script watches that file). Run cargo pgrx with
# PGRX_HOME=DIR/pgrx-home. Prints the copy's pg_config.
set -euo pipefail

pg_config=${1:?usage: private-pg-tree.sh PG_CONFIG DIR}
dir=${2:?usage: private-pg-tree.sh PG_CONFIG DIR}
mkdir -p "$dir/root" "$dir/pgrx-home"
dir=$(cd "$dir" && pwd)

bindir=$("$pg_config" --bindir)
tree=$(dirname "$bindir")           # e.g. /usr/lib/postgresql/15: bin/ and lib/
for d in "$tree" "$("$pg_config" --sharedir)" "$("$pg_config" --pkgincludedir)"; do
  mkdir -p "$dir/root$(dirname "$d")"
  rm -rf "$dir/root$d.new"
  cp -a "$d" "$dir/root$d.new"
  rm -rf "$dir/root$d"
  mv "$dir/root$d.new" "$dir/root$d"
done

private="$dir/root$bindir/pg_config"
# The copy must report its own directories, or the test would install into
# the system's tree after all.
for what in --pkglibdir --sharedir; do
  case "$("$private" "$what")" in
    "$dir/root/"*) ;;
    *) echo "private-pg-tree.sh: the copy's pg_config $what is $("$private" "$what"), outside $dir (not relocatable)" >&2
       exit 1 ;;
  esac
done

config="$dir/pgrx-home/config.toml"
wanted=$(printf '[configs]\npg15 = "%s"\n' "$private")
if [ ! -f "$config" ] || [ "$(cat "$config")" != "$wanted" ]; then
  printf '%s\n' "$wanted" >"$config.new"
  mv "$config.new" "$config"
fi
echo "$private"
