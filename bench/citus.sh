#!/usr/bin/env bash
# Recording throughput on one PostgreSQL server against a Citus coordinator
# and two workers on the same machine (docs/scale-out.md, "Throughput").
#
#   AUTHAUDIT_CITUS_PG_CONFIG=/path/to/bin/pg_config bench/citus.sh
#
# Both setups run from one private copy of the Citus tree
# (scripts/citus-tree.sh) with production settings (fsync and
# synchronous_commit on, shared_buffers 1GB each) and the release build of
# pg_authaudit (`make install-release` first). The single server preloads
# pg_authaudit only; the Citus nodes preload citus and pg_authaudit, with
# the tables distributed by authaudit.distribute(32). Every call goes to the
# single server or to the coordinator, which delegates it to the tenant's
# worker. Rounds alternate between the two; one line per scenario:
#   bench <name>: <tps> tps ratio_vs_single_node=<x.xx>
set -euo pipefail
cd "$(dirname "$0")/.."

: "${AUTHAUDIT_CITUS_PG_CONFIG:?set it to the pg_config of a PostgreSQL 15 tree with Citus}"
SECS=${BENCH_SECONDS:-20}
ROUNDS=${BENCH_ROUNDS:-3}
CLIENT_COUNTS=${BENCH_CITUS_CLIENTS:-4 16}

dir=$(mktemp -d /tmp/authaudit-bench-citus.XXXXXX)
chmod 755 "$dir"  # the servers run as postgres, from the tree inside
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
PGBIN=$(scripts/citus-tree.sh "$AUTHAUDIT_CITUS_PG_CONFIG" "$dir/tree")
export PGBIN
nodes=(single coordinator worker1 worker2)
declare -A port
cleanup() { for n in "${nodes[@]}"; do scripts/testcluster.sh stop "$dir/$n" >/dev/null 2>&1 || true; done; }
trap 'cleanup; rm -rf "$dir"' EXIT
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres)
for n in "${nodes[@]}"; do
  port[$n]=$(free_port)
  scripts/testcluster.sh start "$dir/$n" "${port[$n]}" --bench --watch $$ >/dev/null
  if [ "$n" = single ]; then
    preload="pg_authaudit"
  else
    preload="citus,pg_authaudit"
  fi
  printf "shared_preload_libraries = '%s'\n" "$preload" >>"$dir/$n/data/postgresql.conf"
  scripts/testcluster.sh restart "$dir/$n" >/dev/null
  "${PSQL[@]}" -p "${port[$n]}" -d postgres -c "CREATE DATABASE bench"
  if [ "$n" != single ]; then
    "${PSQL[@]}" -p "${port[$n]}" -d bench -c "CREATE EXTENSION citus"
  fi
  "${PSQL[@]}" -p "${port[$n]}" -d bench -c "CREATE EXTENSION pg_authaudit"
done
"${PSQL[@]}" -p "${port[coordinator]}" -d bench \
  -c "SELECT citus_set_coordinator_host('127.0.0.1', ${port[coordinator]})" \
  -c "SELECT citus_add_node('127.0.0.1', ${port[worker1]})" \
  -c "SELECT citus_add_node('127.0.0.1', ${port[worker2]})" \
  -c "SELECT count(*) FROM authaudit.distribute(32)" >/dev/null

echo "# pg_authaudit on Citus: $(date -u +%FT%TZ), $(nproc) cores, ${ROUNDS} rounds x ${SECS}s, 64 tenants"
results="$dir/results"
mkdir -p "$results"
run() { # run NAME PORT CLIENTS
  local out tps
  out=$(PGHOST=127.0.0.1 PGPORT=$2 PGUSER=postgres pgbench -n -M prepared -c "$3" -j 2 -T "$SECS" \
    -D ntenants=64 -f bench/sql/record_event_routed.sql bench 2>&1)
  tps=$(awk '/^tps = / {print $3}' <<<"$out")
  [ -n "$tps" ] || { echo "bench: pgbench failed for $1: $out" >&2; exit 1; }
  echo "$tps" >>"$results/$1"
  echo "#   $1 round: $tps tps"
}
median() { sort -g "$results/$1" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
for r in $(seq "$ROUNDS"); do
  for c in $CLIENT_COUNTS; do
    run "single_node_${c}_clients" "${port[single]}" "$c"
    run "citus_2_workers_${c}_clients" "${port[coordinator]}" "$c"
  done
done
for c in $CLIENT_COUNTS; do
  awk -v c="$c" -v s="$(median "single_node_${c}_clients")" -v d="$(median "citus_2_workers_${c}_clients")" 'BEGIN {
    printf "bench single_node_%s_clients: %.0f tps\n", c, s
    printf "bench citus_2_workers_%s_clients: %.0f tps ratio_vs_single_node=%.2f\n", c, d, d / s }'
done
# Every call was delegated: the coordinator's own tables hold nothing.
"${PSQL[@]}" -p "${port[coordinator]}" -d bench -At \
  -c "SELECT 'bench rows on the workers: ' || count(*) || ', coordinator shell: ' || pg_relation_size('authaudit.auth_log') || ' bytes' FROM authaudit.auth_log"
