#!/usr/bin/env python3
"""Independent verifier for pg_authaudit hash chains (format version 1).

Recomputes the SHA-256, SHA-512 and SHA3-256 chains of every tenant from an
export of authaudit.auth_log, using only the Python standard library. It
follows docs/chain-format.md and shares no code with the extension.

Export (PostgreSQL's COPY text format, with a header, DateStyle ISO):

    psql -c "COPY (SELECT * FROM authaudit.auth_log ORDER BY tenant_id, seq)
             TO STDOUT WITH (HEADER)" > auth_log.tsv
    python3 tools/verify_chain.py auth_log.tsv
    python3 tools/verify_chain.py --self-test docs/chain-test-vectors.txt

CSV exports (FORMAT csv, HEADER) are read too, but CSV cannot tell NULL from
an empty string, so prefer the text format. Prints one line per tenant and
exits 1 if any chain fails, 2 on unreadable input.
"""

import csv
import hashlib
import ipaddress
import re
import struct
import sys

FORMAT_VERSION = 1
ALGORITHMS = (("sha256", hashlib.sha256, "link_sha256"),
              ("sha512", hashlib.sha512, "digest_sha512"),
              ("sha3-256", hashlib.sha3_256, "digest_sha3_256"))

TS = re.compile(r"^(\d{4,})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?"
                r"(?:([+-])(\d\d)(?::?(\d\d))?(?::?(\d\d))?)?( BC)?$")


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date."""
    y -= m <= 2
    era = y // 400  # floor division, also for years before 1 BC
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def unix_micros(text):
    """Microseconds since the Unix epoch of an ISO timestamptz, exactly."""
    m = TS.match(text)
    if not m:
        raise ValueError("unreadable timestamp %r" % text)
    y, mo, d, h, mi, s = (int(x) for x in m.group(1, 2, 3, 4, 5, 6))
    if m.group(12):
        y = 1 - y  # 1 BC is year 0 of the proleptic Gregorian calendar
    frac = int((m.group(7) or "0").ljust(6, "0"))
    offset = 0
    if m.group(8):
        offset = int(m.group(9)) * 3600 + int(m.group(10) or 0) * 60 + int(m.group(11) or 0)
        if m.group(8) == "-":
            offset = -offset
    seconds = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - offset
    return seconds * 1_000_000 + frac


def field(value):
    """A nullable, length-prefixed field."""
    if value is None:
        return b"\x00"
    return b"\x01" + struct.pack(">I", len(value)) + value


def text(value):
    return None if value is None else value.encode("utf-8")


def ip_bytes(value):
    if value is None:
        return None
    addr = ipaddress.ip_address(value.split("/")[0])
    return bytes([addr.version]) + addr.packed


def bytea(value):
    if not value.startswith("\\x"):
        raise ValueError("bytea must be in hex format (bytea_output = hex)")
    return bytes.fromhex(value[2:])


def body(row):
    """The canonical body: every recorded field except version and seq."""
    return b"".join([
        field(text(row["tenant_id"])),
        field(bytes.fromhex(row["log_id"].replace("-", ""))),
        field(text(row["org_id"])),
        field(text(row["event_type"])),
        field(text(row["user_id"])),
        field(ip_bytes(row["ip"])),
        field(text(row["user_agent"])),
        field(text(row["channel"])),
        struct.pack(">q", unix_micros(row["occurred_at"])),
        struct.pack(">q", unix_micros(row["recorded_at"])),
        field(text(row["metadata"])),
    ])


def genesis(name, fn, tenant):
    return fn(b"pg_authaudit.genesis.v1." + name.encode() + b"\x00" + field(tenant.encode())).digest()


def link(name, fn, prev, seq, body_bytes):
    record = bytes([FORMAT_VERSION]) + struct.pack(">q", seq) + body_bytes
    return fn(b"pg_authaudit.chain.v1." + name.encode() + b"\x00" + prev + record).digest()


def verify_tenant(tenant, rows):
    """Returns (ok, rows_checked, first_bad_seq, reason)."""
    heads = {name: genesis(name, fn, tenant) for name, fn, _ in ALGORITHMS}
    expected = 1
    for row in sorted(rows, key=lambda r: int(r["seq"])):
        seq = int(row["seq"])
        if seq > expected:
            return False, expected - 1, expected, "seq %d is missing" % expected
        if seq < expected:
            # Reported at the row's own seq, as the extension does.
            return False, expected - 1, seq, "seq %d appears more than once or out of order" % seq
        if int(row["format_version"]) != FORMAT_VERSION:
            return False, expected - 1, seq, "unknown format_version"
        if bytea(row["prev_link"]) != heads["sha256"]:
            return False, expected - 1, seq, "prev_link does not match"
        b = body(row)
        for name, fn, column in ALGORITHMS:
            heads[name] = link(name, fn, heads[name], seq, b)
            if bytea(row[column]) != heads[name]:
                return False, expected - 1, seq, "%s digest does not match" % name
        expected += 1
    return True, expected - 1, None, None


def unescape_copy_text(value):
    """Decodes one field of PostgreSQL's COPY text format."""
    if value == "\\N":
        return None
    if "\\" not in value:
        return value
    out, i = [], 0
    simple = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v", "\\": "\\"}
    while i < len(value):
        ch = value[i]
        if ch != "\\" or i + 1 == len(value):
            out.append(ch)
            i += 1
            continue
        nxt = value[i + 1]
        if nxt in simple:
            out.append(simple[nxt])
            i += 2
        elif nxt == "x" and re.match(r"[0-9a-fA-F]", value[i + 2:i + 3] or ""):
            m = re.match(r"[0-9a-fA-F]{1,2}", value[i + 2:])
            out.append(chr(int(m.group(0), 16)))
            i += 2 + len(m.group(0))
        elif nxt in "01234567":
            m = re.match(r"[0-7]{1,3}", value[i + 1:])
            out.append(chr(int(m.group(0), 8)))
            i += 1 + len(m.group(0))
        else:
            out.append(nxt)
            i += 2
    return "".join(out)


def read_rows(stream):
    data = stream.read()
    first = data.split("\n", 1)[0]
    if "\t" in first:
        lines = data.split("\n")
        header = lines[0].split("\t")
        for line in lines[1:]:
            if line == "" or line == "\\.":
                continue
            values = [unescape_copy_text(v) for v in line.split("\t")]
            yield dict(zip(header, values))
    else:
        for row in csv.DictReader(data.splitlines(keepends=True)):
            yield {k: (None if v == "" and k in ("org_id", "ip", "user_agent") else v)
                   for k, v in row.items()}


def self_test(path):
    """Recomputes the published test vectors (docs/chain-test-vectors.txt)."""
    expected = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if " = " in line and not line.startswith("#"):
                name, value = line.strip().split(" = ")
                expected[name] = value
    first = {"tenant_id": "acme", "log_id": "00000000-0000-4000-8000-000000000001",
             "org_id": None, "event_type": "login_failed", "user_id": "alice",
             "ip": "192.0.2.1", "user_agent": "curl/8.0", "channel": "web",
             "occurred_at": "2026-01-01 00:00:00+00",
             "recorded_at": "2026-01-01 00:00:00.000001+00",
             "metadata": '{"reason": "bad_password"}'}
    second = dict(first, log_id="00000000-0000-4000-8000-000000000002", org_id="hq",
                  event_type="login_success", ip="2001:db8::1", user_agent=None,
                  channel="mobile", occurred_at="2026-01-01 00:00:01+00",
                  recorded_at="2026-01-01 00:00:01.000001+00", metadata="{}")
    third = dict(first, log_id="00000000-0000-4000-8000-000000000003", org_id="hq.ops",
                 user_id="zo\u00eb \U0001F600", ip="::ffff:192.0.2.1", user_agent="\u00dc",
                 channel="ssh", occurred_at="1900-01-01 00:00:00+05:53:28",
                 recorded_at="2026-01-01 00:00:02+00",
                 metadata='{"a": {"b": [1, 2.50, null, true]}, "q": "say \\"hi\\"\\n\\\\"}')
    fourth = dict(first, log_id="00000000-0000-4000-8000-000000000004", event_type="lockout_reset",
                  ip=None, user_agent=None, channel="api",
                  occurred_at="0044-03-15 12:00:00+00 BC",
                  recorded_at="1969-12-31 23:59:59.999999+00", metadata="{}")
    got = {}
    heads = {name: genesis(name, fn, "acme") for name, fn, _ in ALGORITHMS}
    for name, _, _ in ALGORITHMS:
        got["genesis." + name.replace("-", "_")] = heads[name].hex()
    got["record1"] = (bytes([FORMAT_VERSION]) + struct.pack(">q", 1) + body(first)).hex()
    got["record3"] = (bytes([FORMAT_VERSION]) + struct.pack(">q", 3) + body(third)).hex()
    for seq, row in ((1, first), (2, second), (3, third), (4, fourth)):
        b = body(row)
        for name, fn, _ in ALGORITHMS:
            heads[name] = link(name, fn, heads[name], seq, b)
            got["seq%d.%s" % (seq, name.replace("-", "_"))] = heads[name].hex()
    bad = [k for k in got if expected.get(k) != got[k]]
    for k in bad:
        print("vector %s differs: expected %s, computed %s" % (k, expected.get(k), got[k]))
    print("self-test: %d vectors, %d differ" % (len(got), len(bad)))
    return 1 if bad else 0


def main(argv):
    if len(argv) == 3 and argv[1] == "--self-test":
        return self_test(argv[2])
    if len(argv) > 2 or (len(argv) == 2 and argv[1] in ("-h", "--help")):
        print(__doc__)
        return 0 if len(argv) == 2 else 2
    stream = open(argv[1], encoding="utf-8", newline="") if len(argv) == 2 else sys.stdin
    tenants = {}
    try:
        for row in read_rows(stream):
            tenants.setdefault(row["tenant_id"], []).append(row)
    except (KeyError, ValueError) as e:
        print("unreadable export: %s" % e, file=sys.stderr)
        return 2
    failed = False
    for tenant in sorted(tenants):
        try:
            ok, checked, bad, reason = verify_tenant(tenant, tenants[tenant])
        except (KeyError, ValueError) as e:
            ok, checked, bad, reason = False, 0, None, "unreadable row: %s" % e
        if ok:
            print("%s: ok, %d rows" % (tenant, checked))
        else:
            failed = True
            print("%s: FAILED at seq %s after %d good rows: %s" % (tenant, bad, checked, reason))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
