#!/usr/bin/env bash
# Throwaway PostgreSQL 15 clusters for tests and benchmarks.
#
#   testcluster.sh start DIR PORT [--bench|--durable] [--watch PID]
#   testcluster.sh restart DIR | crash DIR
#   testcluster.sh stop DIR
#
# start: initdb into DIR (as the postgres OS user when run as root), listen on
# 127.0.0.1:PORT and a socket in DIR, wal_level=logical with replication slots
# and WAL senders. Test clusters trade durability for speed (fsync off);
# --bench keeps production settings (fsync and synchronous_commit on) and
# preloads pgaudit; --durable keeps commits durable across a server crash
# (synchronous_commit on) for crash tests. --watch PID stops and removes the cluster once process
# PID has exited, however it exited. Test clusters also accept TLS: DIR/tls
# holds a certificate authority (ca.crt), the server's certificate signed by
# it for the name "localhost" only (not 127.0.0.1), and an unrelated
# authority (other-ca.crt), for the sidecar's TLS tests.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

cmd=${1:?usage: testcluster.sh start|stop DIR ...}
dir=${2:?usage: testcluster.sh start|stop DIR ...}

case "$cmd" in
start)
  port=${3:?usage: testcluster.sh start DIR PORT [--bench] [--watch PID]}
  shift 3
  bench=0
  durable=0
  watch=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --bench) bench=1 ;;
      --durable) durable=1 ;;
      --watch) watch=$2; shift ;;
      *) echo "testcluster.sh: unknown option $1" >&2; exit 2 ;;
    esac
    shift
  done
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
  chmod 700 "$dir"
  as_owner "$PGBIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  {
    echo "listen_addresses = '127.0.0.1'"
    echo "port = $port"
    echo "unix_socket_directories = '$dir'"
    echo "wal_level = logical"
    echo "max_replication_slots = 20"
    echo "max_wal_senders = 20"
    echo "max_connections = 200"
    echo "wal_sender_timeout = '10s'"
    echo "log_min_messages = warning"
    echo "log_line_prefix = '%m [%p] %d '"
    if [ "$bench" = 1 ]; then
      echo "shared_buffers = '1GB'"
      echo "fsync = on"
      echo "synchronous_commit = on"
      echo "max_wal_size = '4GB'"
      echo "shared_preload_libraries = 'pgaudit,pg_authaudit'"
      echo "pgaudit.log = 'none'"
    else
      echo "shared_buffers = '256MB'"
      echo "shared_preload_libraries = 'pg_authaudit'"
      echo "fsync = off"
      if [ "$durable" = 1 ]; then echo "synchronous_commit = on"; else echo "synchronous_commit = off"; fi
      echo "full_page_writes = off"
    fi
  } >>"$dir/data/postgresql.conf"
  if [ "$bench" = 0 ]; then
    tls="$dir/tls"
    mkdir -p "$tls"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    {
      openssl req -x509 "${ec[@]}" -days 7 -subj "/CN=pg_authaudit test CA" \
        -keyout "$tls/ca.key" -out "$tls/ca.crt"
      openssl req -x509 "${ec[@]}" -days 7 -subj "/CN=unrelated CA" \
        -keyout "$tls/other-ca.key" -out "$tls/other-ca.crt"
      openssl req "${ec[@]}" -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr"
      printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >"$tls/server.ext"
      openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial \
        -days 7 -extfile "$tls/server.ext" -out "$tls/server.crt"
    } >"$tls/openssl.log" 2>&1 || { cat "$tls/openssl.log" >&2; exit 1; }
    chmod 600 "$tls/server.key"
    if [ "$(id -u)" = 0 ]; then chown -R postgres "$tls"; fi
    {
      echo "ssl = on"
      echo "ssl_cert_file = '$tls/server.crt'"
      echo "ssl_key_file = '$tls/server.key'"
    } >>"$dir/data/postgresql.conf"
  fi
  as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  if [ -n "$watch" ]; then
    # Detached watchdog: tears the cluster down when the watched process ends.
    nohup setsid bash -c '
      while kill -0 "$1" 2>/dev/null; do sleep 1; done
      "$0" stop "$2"' "$(readlink -f "$0")" "$watch" "$dir" >/dev/null 2>&1 &
  fi
  echo "$port"
  ;;
restart)
  # A fast shutdown and start (clients and replication connections drop).
  as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w -t 60 restart >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  ;;
crash)
  # Every server process killed at once (an immediate shutdown: no
  # checkpoint, no flush), then started again: crash recovery replays the
  # WAL, as after a power cut with the WAL on disk.
  as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  as_owner "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  ;;
stop)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$PGBIN/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: testcluster.sh start DIR PORT [--bench] [--watch PID] | restart DIR | crash DIR | stop DIR" >&2
  exit 2
  ;;
esac
