#!/usr/bin/env python3
"""The platform API benchmark's client (bench/api.sh).

    api_client.py pages PORT TOKEN N QUERY...    N requests over the queries, in turn:
                                                 prints "p50_ms p99_ms mean_rows"
    api_client.py export PORT TOKEN QUERY        one NDJSON export: "rows bytes seconds"
    api_client.py tail PORT TOKEN AFTER SECONDS  long-polls from AFTER for SECONDS:
                                                 "events p50_ms p99_ms" of arrival minus
                                                 recorded_at
"""
import datetime
import http.client
import json
import sys
import time

def quantile(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def pages(port, token, n, queries):
    conn = http.client.HTTPConnection("127.0.0.1", int(port))
    headers = {"Authorization": f"Bearer {token}"}
    times, rows = [], 0
    for i in range(int(n)):
        q = queries[i % len(queries)]
        t0 = time.perf_counter()
        conn.request("GET", q, headers=headers)
        r = conn.getresponse()
        body = r.read()
        times.append((time.perf_counter() - t0) * 1000)
        if r.status != 200:
            sys.exit(f"{q}: {r.status} {body[:300]!r}")
        rows += len(json.loads(body))
    print(f"{quantile(times, 0.5):.1f} {quantile(times, 0.99):.1f} {rows / len(times):.0f}")


def export(port, token, query):
    conn = http.client.HTTPConnection("127.0.0.1", int(port))
    t0 = time.perf_counter()
    conn.request("GET", query, headers={"Authorization": f"Bearer {token}",
                                        "Accept": "application/x-ndjson"})
    r = conn.getresponse()
    if r.status != 200:
        sys.exit(f"{r.status} {r.read()[:300]!r}")
    n = size = 0
    while True:
        chunk = r.read(1 << 16)
        if not chunk:
            break
        size += len(chunk)
        n += chunk.count(b"\n")
    print(f"{n} {size} {time.perf_counter() - t0:.3f}")


def tail(port, token, after, seconds):
    conn = http.client.HTTPConnection("127.0.0.1", int(port))
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.time() + float(seconds)
    lags = []
    after = int(after)
    while time.time() < deadline:
        conn.request("GET", f"/v1/tenants/big/events?after={after}&wait=5&limit=1000", headers=headers)
        r = conn.getresponse()
        body = r.read()
        arrived = datetime.datetime.now(datetime.timezone.utc)
        if r.status != 200:
            sys.exit(f"{r.status} {body[:300]!r}")
        for e in json.loads(body):
            recorded = datetime.datetime.fromisoformat(e["recorded_at"])
            lags.append((arrived - recorded).total_seconds() * 1000)
            after = e["seq"]
    if not lags:
        sys.exit("no event arrived")
    print(f"{len(lags)} {quantile(lags, 0.5):.1f} {quantile(lags, 0.99):.1f}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"pages": lambda p, t, n, *q: pages(p, t, n, q), "export": export, "tail": tail}[cmd](*args)
