#!/usr/bin/env python3
"""p50 and p99 of a sidecar latency histogram between two scrapes.

    bench/quantiles.py METRIC BEFORE AFTER

BEFORE and AFTER are files holding a scrape of /metrics each; METRIC is the
histogram's name (authaudit_sidecar_commit_to_ack_seconds). Prints
"p50 p99 buckets": the quantiles of the observations made between the two
scrapes, interpolated within a bucket as PromQL's histogram_quantile does,
and the observations by bucket ("le:n,...").
"""
import re
import sys


def buckets(path, metric):
    text = open(path).read()
    pattern = r"^" + re.escape(metric) + r'_bucket\{le="([^"]+)"\} (\S+)$'
    return {float(le): float(n) for le, n in re.findall(pattern, text, re.M)}


def quantile(q, les, counts):
    rank = q * counts[-1]
    lo, below = 0.0, 0.0
    for le, c in zip(les, counts):
        if c >= rank:
            if le == float("inf"):
                return lo
            return lo + (le - lo) * (rank - below) / max(c - below, 1e-9)
        lo, below = le, c
    return lo


def main():
    metric, before, after = sys.argv[1:4]
    a, b = buckets(before, metric), buckets(after, metric)
    les = sorted(b)
    counts = [b[le] - a.get(le, 0) for le in les]
    per = [c - p for p, c in zip([0.0] + counts, counts)]
    dist = ",".join("%g:%d" % (le, n) for le, n in zip(les, per) if n)
    print(quantile(0.5, les, counts), quantile(0.99, les, counts), dist or "-")


if __name__ == "__main__":
    main()
