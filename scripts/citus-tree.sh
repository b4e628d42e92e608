#!/usr/bin/env bash
# A private copy of a PostgreSQL 15 tree that has Citus installed, with the
# pg_authaudit of the system's tree (what `make install` or
# `make install-release` put there) copied into it, for the Citus suite and
# benchmark (docs/scale-out.md). The tree named is never written.
#
#   citus-tree.sh CITUS_PG_CONFIG DIR
#
# Prints the copy's bin directory.
set -euo pipefail

citus_pg_config=${1:?usage: citus-tree.sh CITUS_PG_CONFIG DIR}
dir=${2:?usage: citus-tree.sh CITUS_PG_CONFIG DIR}
system_pg_config=${SYSTEM_PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
here=$(cd "$(dirname "$0")" && pwd)

pg_config=$("$here/private-pg-tree.sh" "$citus_pg_config" "$dir")
libdir=$("$pg_config" --pkglibdir)
extdir=$("$pg_config" --sharedir)/extension
if [ ! -e "$libdir/citus.so" ]; then
  echo "citus-tree.sh: $citus_pg_config names a tree without citus.so" >&2
  exit 1
fi
cp "$("$system_pg_config" --pkglibdir)/pg_authaudit.so" "$libdir/pg_authaudit.so"
rm -f "$extdir"/pg_authaudit*
cp "$("$system_pg_config" --sharedir)"/extension/pg_authaudit* "$extdir/"
dirname "$pg_config"
