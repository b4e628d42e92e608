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

A chain whose oldest rows authaudit.apply_retention removed starts again at
the anchor its retention_applied event recorded (docs/chain-format.md,
"Retention"). With --checkpoint (repeatable) and --key, each signed
checkpoint of the witness is checked too: its signature (the `cryptography`
package), that the export still holds its tree (the Merkle root over seq 1
to its size; after retention, its head row's digests) and that no row it
covers is missing from the tail:

    python3 tools/verify_chain.py auth_log.tsv --checkpoint note.txt --key 'authaudit-witness+1a2b3c4d+Ac…'

--key may be repeated (the old and the new key after a rotation). A key
rotation statement (authaudit-sidecar witness-rotate) is checked with the
old key, the one already trusted, and prints the new one:

    python3 tools/verify_chain.py --rotation statement.txt --key 'authaudit-witness+1a2b3c4d+Ac…'

CSV exports (FORMAT csv, HEADER) are read too, but CSV cannot tell NULL from
an empty string, so prefer the text format. Prints one line per tenant (and
per checkpoint) and exits 1 if any chain or checkpoint fails, 2 on
unreadable input.
"""

import base64
import csv
import hashlib
import hmac
import ipaddress
import json
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


def retention_anchors(rows):
    """(event seq, recorded anchor) of every retention_applied event whose
    metadata names an anchor seq."""
    for row in rows:
        if row["event_type"] != "retention_applied":
            continue
        try:
            anchor = json.loads(row["metadata"])["_authaudit"]["retention"]["anchor"]
            int(anchor["seq"])
        except (KeyError, TypeError, ValueError):
            continue
        yield int(row["seq"]), anchor


def retention_anchor(rows, first):
    """The anchor the latest retention_applied event cut at seq `first - 1`
    recorded: {"sha256": …, "sha512": …, "sha3-256": …} (the last two absent
    in events of releases before 0.7.0), or None."""
    cut_here = [(seq, a) for seq, a in retention_anchors(rows) if int(a["seq"]) == first - 1]
    if not cut_here:
        return None
    anchor = max(cut_here, key=lambda e: e[0])[1]
    out = {}
    for name, _, column in ALGORITHMS:
        value = anchor.get(column)
        if isinstance(value, str) and re.fullmatch(r"[0-9a-f]+", value):
            out[name] = bytes.fromhex(value)
    return out if "sha256" in out else None


def retention_cut(rows, first):
    """The latest seq below `first` a retention_applied event says the log was cut at (0 if none)."""
    return max((int(a["seq"]) for _, a in retention_anchors(rows) if int(a["seq"]) < first), default=0)


def verify_tenant(tenant, rows):
    """Returns (ok, rows_checked, first_bad_seq, reason, note): note says
    where a retained chain was anchored."""
    rows = sorted(rows, key=lambda r: int(r["seq"]))
    heads = {name: genesis(name, fn, tenant) for name, fn, _ in ALGORITHMS}
    expected, note = 1, None
    # Chains not anchored yet: take the first row's stored digest (only for
    # an event that recorded the SHA-256 link alone, before 0.7.0).
    unanchored = set()
    first = int(rows[0]["seq"]) if rows else 1
    if first > 1:
        cut = retention_cut(rows, first)
        if cut != first - 1:
            return (False, 0, cut + 1, "rows %d to %d are missing and no retention_applied event "
                    "accounts for them" % (cut + 1, first - 1), None)
        anchor = retention_anchor(rows, first)
        if anchor is None:
            return False, 0, first - 1, "anchor row is missing or malformed", None
        heads.update(anchor)
        unanchored = {name for name, _, _ in ALGORITHMS if name not in anchor}
        expected = first
        note = "from seq %d, anchored at seq %d by its retention_applied event" % (first, first - 1)
        if unanchored:
            note += (" (SHA-256 only: the event predates three-digest anchors, so %s start from "
                     "seq %d's stored digests)" % (" and ".join(sorted(unanchored)), first))
    for row in rows:
        seq = int(row["seq"])
        if seq > expected:
            return False, expected - first, expected, "seq %d is missing" % expected, note
        if seq < expected:
            # Reported at the row's own seq, as the extension does.
            return (False, expected - first, seq,
                    "seq %d appears more than once or out of order" % seq, note)
        if int(row["format_version"]) != FORMAT_VERSION:
            return False, expected - first, seq, "unknown format_version", note
        if bytea(row["prev_link"]) != heads["sha256"]:
            return False, expected - first, seq, "prev_link does not match", note
        b = body(row)
        for name, fn, column in ALGORITHMS:
            if name in unanchored:
                heads[name] = bytea(row[column])
                continue
            heads[name] = link(name, fn, heads[name], seq, b)
            if bytea(row[column]) != heads[name]:
                return False, expected - first, seq, "%s digest does not match" % name, note
        unanchored = set()
        expected += 1
    return True, expected - first, None, None, note


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def merkle_root(leaves):
    """RFC 9162, 2.1.1: the root of the tree over `leaves` (leaf data)."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    # Left to right, merging complete subtrees of equal size (the peaks).
    stack = []
    for data in leaves:
        node, size = leaf_hash(data), 1
        while stack and stack[-1][1] == size:
            node, size = node_hash(stack.pop()[0], node), size * 2
        stack.append((node, size))
    node = stack.pop()[0]
    while stack:
        node = node_hash(stack.pop()[0], node)
    return node


def verifier_key(text):
    """(name, key id, public key) of a verifier key text name+id+base64(0x01 || key)."""
    name, key_id, data = text.strip().split("+", 2)
    raw = base64.b64decode(data)
    if len(raw) != 33 or raw[0] != 1:
        raise ValueError("not an Ed25519 verifier key")
    public = raw[1:]
    expected = hashlib.sha256(name.encode() + b"\n" + b"\x01" + public).digest()[:4]
    if expected.hex() != key_id:
        raise ValueError("the verifier key's id does not match its key")
    return name, expected, public


def open_note(note, key_text):
    """The text of a C2SP signed note if the key signed it (raises otherwise)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    name, key_id, public = verifier_key(key_text)
    text, _, signatures = note.partition("\n\n")
    text += "\n"
    for line in signatures.splitlines():
        if not line.startswith("\u2014 "):
            raise ValueError("a signature line starts with an em dash")
        signer, _, sig = line[2:].partition(" ")
        sig = base64.b64decode(sig)
        if signer != name or sig[:4] != key_id:
            continue
        Ed25519PublicKey.from_public_bytes(public).verify(sig[4:], text.encode())
        return text
    raise ValueError("the note carries no signature by %s" % name)


def parse_checkpoint(text):
    """(origin, tree size, root, extension lines) of a checkpoint's text."""
    lines = text.split("\n")
    extensions = dict(l.split(" ", 1) for l in lines[3:] if " " in l)
    return lines[0], int(lines[1]), base64.b64decode(lines[2]), extensions


def open_checkpoint(note, key_text):
    """(origin, tree size, root, extension lines) of a signed checkpoint."""
    return parse_checkpoint(open_note(note, key_text))


def open_rotation(note, old_key):
    """(new key text, time) of a key rotation statement: signed by the old
    key, naming it, and signed by the new key it names (raises otherwise)."""
    lines = open_note(note, old_key).split("\n")
    if lines[0] != "pg_authaudit witness key rotation" or len(lines) < 4:
        raise ValueError("not a key rotation statement")
    fields = dict(l.split(" ", 1) for l in lines[1:4])
    if fields.get("old") != old_key.strip():
        raise ValueError("the statement names another old key")
    open_note(note, fields["new"])
    return fields["new"], fields.get("time")


def check_checkpoint(note, keys, tenants):
    """Returns (ok, message) for one signed checkpoint against the export,
    signed by one of `keys`."""
    for key_text in keys[:-1]:
        try:
            text = open_note(note, key_text)
            break
        except Exception:  # another key; the last one's error is reported
            continue
    else:
        key_text = keys[-1]
        text = open_note(note, key_text)
    origin, size, root, ext = parse_checkpoint(text)
    tenant = max((t for t in tenants if origin.endswith("/" + t)), key=len, default=None)
    if tenant is None:
        return False, "checkpoint %s: no tenant of the export" % origin
    rows = {int(r["seq"]): r for r in tenants[tenant]}
    last = max(rows, default=0)
    where = "checkpoint of %s at tree size %d" % (tenant, size)
    if last < size:
        return False, ("%s: FAILED at seq %d: the witness signed %d rows, the export ends at seq %d "
                       "(rows were removed from the tail)" % (where, last + 1, size, last))
    head = rows.get(size)
    if head is None:
        return False, "%s: FAILED at seq %d: the row is missing" % (where, size)
    for name, _, column in ALGORITHMS:
        signed = ext.get(column)
        if signed is not None and not hmac.compare_digest(bytes.fromhex(signed), bytea(head[column])):
            return False, "%s: FAILED at seq %d: its %s differs from the signed one" % (where, size, name)
    if all(s in rows for s in range(1, size + 1)):
        got = merkle_root([bytea(rows[s]["link_sha256"]) for s in range(1, size + 1)])
        if not hmac.compare_digest(got, root):
            return False, "%s: FAILED: the rows give root %s, the witness signed %s" % (
                where, got.hex(), root.hex())
        return True, "%s: ok, root %s signed by %s" % (where, root.hex(), key_text.split("+")[0])
    return True, ("%s: ok, head seq %d's digests signed by %s (retention removed leaves, so the "
                  "root is not recomputed)" % (where, size, key_text.split("+")[0]))


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
    got.update(retained_vectors(fourth, heads))
    got.update(witness_vectors([first, second, third, fourth], expected))
    bad = [k for k in got if expected.get(k) != got[k]]
    for k in bad:
        print("vector %s differs: expected %s, computed %s" % (k, expected.get(k), got[k]))
    print("self-test: %d vectors, %d differ" % (len(got), len(bad)))
    return 1 if bad else 0


def retained_row(template, anchor_heads):
    """Event seq 5 of the vectors: the retention_applied event that removed
    seq 1 to 4, recording seq 4's three digests as its anchor."""
    anchor = ", ".join('"%s": "%s"' % (column, anchor_heads[name].hex())
                       for name, _, column in ALGORITHMS)
    metadata = ('{"_authaudit": {"retention": {"mode": "delete", "anchor": {"seq": 4, %s}, '
                '"removed_rows": 4, "removed_to_seq": 4, "removed_from_seq": 1}}}' % anchor)
    return dict(template, seq="5", log_id="00000000-0000-4000-8000-000000000005",
                event_type="retention_applied", user_id="dpo", channel="system",
                occurred_at="2027-02-05 00:00:00+00", recorded_at="2027-02-05 00:00:00.000001+00",
                metadata=metadata, format_version="1")


def retained_vectors(fourth, heads):
    """Seq 5 continues seq 4; the chain retained to seq 5 alone must verify
    from the anchor its own metadata records."""
    row = retained_row(fourth, heads)
    b = body(row)
    out = {"retained.record5": (bytes([FORMAT_VERSION]) + struct.pack(">q", 5) + b).hex()}
    row["prev_link"] = "\\x" + heads["sha256"].hex()
    for name, fn, column in ALGORITHMS:
        digest = link(name, fn, heads[name], 5, b)
        out["retained.seq5." + name.replace("-", "_")] = digest.hex()
        row[column] = "\\x" + digest.hex()
    ok, _, _, reason, _ = verify_tenant("acme", [row])
    if not ok:
        raise ValueError("the retained chain does not verify: %s" % reason)
    return out


WITNESS_SEED = bytes(range(32))
WITNESS_NAME = "vectors-witness"


def witness_vectors(rows, expected):
    """The Merkle tree of seq 1 to 4, an audit path, and the witness's
    signed checkpoint of it (Ed25519 with the seed 00 01 … 1f)."""
    heads = {name: genesis(name, fn, "acme") for name, fn, _ in ALGORITHMS}
    links = []
    for seq, row in enumerate(rows, 1):
        b = body(row)
        for name, fn, _ in ALGORITHMS:
            heads[name] = link(name, fn, heads[name], seq, b)
        links.append(heads["sha256"])
    out = {"merkle.root4": merkle_root(links).hex(),
           "merkle.root3": merkle_root(links[:3]).hex(),
           # The audit path of seq 2 (leaf 1) in the tree of size 4.
           "merkle.path2_4": (leaf_hash(links[0]) + node_hash(leaf_hash(links[2]),
                                                              leaf_hash(links[3]))).hex()}
    import verify_evidence  # the audit-path check (RFC 9162, 2.1.3.2)
    path = [bytes.fromhex(out["merkle.path2_4"][i:i + 64]) for i in (0, 64)]
    if verify_evidence.root_from_path(1, 4, leaf_hash(links[1]), path) != merkle_root(links):
        raise ValueError("the audit path of seq 2 does not lead to the root")
    text = checkpoint_text("pg_authaudit/acme", 4, merkle_root(links), heads, "2026-01-01T00:00:05+00:00")
    out["witness.text"] = text.encode().hex()
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        # Without the package the signature is taken as published.
        out["witness.signature"] = expected.get("witness.signature", "")
        return out
    key = Ed25519PrivateKey.from_private_bytes(WITNESS_SEED)
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    out["witness.public_key"] = public.hex()
    key_id = hashlib.sha256(WITNESS_NAME.encode() + b"\n\x01" + public).digest()[:4]
    out["witness.key_id"] = key_id.hex()
    out["witness.signature"] = key.sign(text.encode()).hex()
    note = "%s\n\u2014 %s %s\n" % (text, WITNESS_NAME, base64.b64encode(
        key_id + bytes.fromhex(out["witness.signature"])).decode())
    key_text = "%s+%s+%s" % (WITNESS_NAME, key_id.hex(), base64.b64encode(b"\x01" + public).decode())
    if open_checkpoint(note, key_text)[2] != merkle_root(links):
        raise ValueError("the signed checkpoint does not open")
    return out


def checkpoint_text(origin, size, root, heads, time):
    """A witness checkpoint's signed text (docs/chain-format.md, "Signed checkpoints")."""
    return "%s\n%d\n%s\nseq %d\n%s\ntime %s\n" % (
        origin, size, base64.b64encode(root).decode(), size,
        "\n".join("%s %s" % (column, heads[name].hex()) for name, _, column in ALGORITHMS), time)


def main(argv):
    args = argv[1:]
    if len(args) == 2 and args[0] == "--self-test":
        return self_test(args[1])
    notes, keys, rotation = [], [], None
    for flag in ("--checkpoint", "--key", "--rotation"):
        while flag in args:
            i = args.index(flag)
            if i + 1 >= len(args):
                print(__doc__)
                return 2
            {"--checkpoint": notes, "--key": keys}.get(flag, []).append(args[i + 1])
            if flag == "--rotation":
                rotation = args[i + 1]
            del args[i:i + 2]
    if rotation is not None:
        if len(keys) != 1 or args or notes:
            print(__doc__)
            return 2
        try:
            with open(rotation, encoding="utf-8") as f:
                new, time = open_rotation(f.read(), keys[0])
        except (KeyError, ValueError, IndexError) as e:
            print("rotation %s: refused: %s" % (rotation, e))
            return 1
        except Exception as e:  # an invalid signature raises InvalidSignature
            print("rotation %s: refused: a signature does not verify (%s)" % (rotation, type(e).__name__))
            return 1
        print("ok: %s hands over to %s at %s, signed by both" % (keys[0], new, time))
        return 0
    if len(args) > 1 or (args and args[0] in ("-h", "--help")) or bool(notes) != bool(keys):
        print(__doc__)
        return 0 if args and args[0] in ("-h", "--help") else 2
    stream = open(args[0], encoding="utf-8", newline="") if args else sys.stdin
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
            ok, checked, bad, reason, note = verify_tenant(tenant, tenants[tenant])
        except (KeyError, ValueError) as e:
            ok, checked, bad, reason, note = False, 0, None, "unreadable row: %s" % e, None
        suffix = " (%s)" % note if note else ""
        if ok:
            print("%s: ok, %d rows%s" % (tenant, checked, suffix))
        else:
            failed = True
            print("%s: FAILED at seq %s after %d good rows: %s%s" % (tenant, bad, checked, reason, suffix))
    for path in notes:
        try:
            with open(path, encoding="utf-8") as f:
                ok, message = check_checkpoint(f.read(), keys, tenants)
        except (KeyError, ValueError, IndexError) as e:
            ok, message = False, "checkpoint %s: unreadable: %s" % (path, e)
        except Exception as e:  # an invalid signature raises InvalidSignature
            ok, message = False, "checkpoint %s: not signed by that key (%s)" % (path, type(e).__name__)
        failed |= not ok
        print(message)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
