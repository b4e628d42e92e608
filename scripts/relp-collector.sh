#!/usr/bin/env bash
# A private rsyslog receiving RELP on a loopback port and writing each
# message's MSG (the CEF line) to one file: the collector of `make demo` and
# of bench/mirror.sh (docs/sidecar.md, "The SIEM sink").
#
#   relp-collector.sh DIR PORT   start rsyslogd in the background; its files
#                                go to DIR (the stream to DIR/cef-stream.log);
#                                prints its pid once it listens on PORT
set -euo pipefail
dir=$1 port=$2
mkdir -p "$dir/work"
cat >"$dir/rsyslog.conf" <<CONF
global(workDirectory="$dir/work")
module(load="imrelp")
template(name="cef" type="string" string="%msg%\n")
input(type="imrelp" address="127.0.0.1" port="$port")
action(type="omfile" file="$dir/cef-stream.log" template="cef")
CONF
/usr/sbin/rsyslogd -n -f "$dir/rsyslog.conf" -i "$dir/rsyslogd.pid" >"$dir/rsyslogd.log" 2>&1 </dev/null &
pid=$!
until (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
  kill -0 "$pid" 2>/dev/null || { cat "$dir/rsyslogd.log" >&2; exit 1; }
  sleep 0.05
done
echo "$pid"
