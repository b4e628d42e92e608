#!/usr/bin/env python3
"""Offline check that one pg_authaudit event is in its tenant's Merkle tree.

Reads an evidence bundle (JSON) as authaudit.inclusion_evidence returns it:

    psql -XAtc "SELECT authaudit.inclusion_evidence('agency-1', 40, 1000)" > evidence.json
    python3 tools/verify_evidence.py evidence.json
    python3 tools/verify_evidence.py evidence.json --root <hex>   # a root you trust
    python3 tools/verify_evidence.py evidence.json --checkpoint note.txt --key <verifier key>

    psql -XAtc "SELECT authaudit.witnessed_evidence('agency-1', 40)" > evidence.json
    python3 tools/verify_evidence.py evidence.json --key <verifier key>

It recomputes the row's SHA-256 link from its recorded fields and its
prev_link (docs/chain-format.md, with tools/verify_chain.py's encoding),
hashes its link_sha256 into the leaf H(0x00 || link), follows the audit
path to the root (RFC 9162, 2.1.3.2) and compares that root with the one
given by --root, or with the root of a signed checkpoint (--checkpoint, a
C2SP signed note of the witness, checked with --key, the witness's
verifier key: name+id+base64; without --checkpoint, the note the bundle
carries, as authaudit.witnessed_evidence returns it), else the bundle's
own. The key must come from the witness's operator, never from the
bundle or the database. Python standard
library only, and the `cryptography` package for --checkpoint.
Prints one line and exits 0 if the event is in the tree, 1 if not, 2 on
unreadable input.
"""

import hashlib
import hmac
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import verify_chain  # noqa: E402  (the chain encoding, shared with the chain verifier)


leaf_hash, node_hash = verify_chain.leaf_hash, verify_chain.node_hash


def root_from_path(index, size, leaf, path):
    """RFC 9162, 2.1.3.2: the root the audit path leads to, or None."""
    if index >= size:
        return None
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def check(bundle, trusted_root=None):
    """Returns (ok, message)."""
    if bundle.get("format") != "pg_authaudit.evidence.v1":
        return False, "unknown evidence format %r" % bundle.get("format")
    row = bundle["row"]
    seq = int(row["seq"])
    if int(row["format_version"]) != verify_chain.FORMAT_VERSION:
        return False, "unknown format_version %s" % row["format_version"]
    body = verify_chain.body(row)
    prev = verify_chain.bytea(row["prev_link"])
    # The leaf is the SHA-256 link; the SHA-512 and SHA3-256 digests chain
    # from their own previous values, which a single row does not carry.
    link = verify_chain.bytea(row["link_sha256"])
    if verify_chain.link("sha256", hashlib.sha256, prev, seq, body) != link:
        return False, "the row's link_sha256 is not the hash of its fields and prev_link"
    index, size = int(bundle["leaf_index"]), int(bundle["tree_size"])
    if index != seq - 1:
        return False, "leaf %d does not hold seq %d" % (index, seq)
    path = [bytes.fromhex(h) for h in bundle["path"]]
    got = root_from_path(index, size, leaf_hash(link), path)
    if got is None:
        return False, "the audit path has the wrong length for leaf %d of %d" % (index, size)
    want = bytes.fromhex(trusted_root if trusted_root is not None else bundle["root_hash"])
    if not hmac.compare_digest(got, want):
        return False, "the audit path leads to %s, not to the root %s" % (got.hex(), want.hex())
    return True, "ok: seq %d of tenant %s is leaf %d of the tree of size %d with root %s" % (
        seq, row["tenant_id"], index, size, got.hex())


def main(argv):
    args = argv[1:]
    options = {}
    for flag in ("--root", "--checkpoint", "--key"):
        if flag in args:
            i = args.index(flag)
            if i + 1 >= len(args):
                print(__doc__)
                return 2
            options[flag] = args[i + 1]
            del args[i:i + 2]
    if len(args) != 1 or args[0] in ("-h", "--help") or ("--checkpoint" in options and "--key" not in options):
        print(__doc__)
        return 0 if args and args[0] in ("-h", "--help") else 2
    try:
        with open(args[0], encoding="utf-8") as f:
            bundle = json.load(f)
        trusted = options.get("--root")
        if "--key" in options:
            if "--checkpoint" in options:
                with open(options["--checkpoint"], encoding="utf-8") as f:
                    note = f.read()
            elif "checkpoint" in bundle:
                note = bundle["checkpoint"]
            else:
                print("the evidence carries no signed checkpoint: pass one with --checkpoint")
                return 1
            try:
                origin, size, root, _ = verify_chain.open_checkpoint(note, options["--key"])
            except Exception as e:  # an invalid signature raises InvalidSignature
                print("the checkpoint is not signed by that key: %s" % (e or type(e).__name__))
                return 1
            if size != int(bundle["tree_size"]):
                print("the checkpoint is of a tree of size %d, the evidence of size %s" % (size, bundle["tree_size"]))
                return 1
            if not origin.endswith("/" + bundle["row"]["tenant_id"]):
                print("the checkpoint's origin %s is not the tenant %s" % (origin, bundle["row"]["tenant_id"]))
                return 1
            trusted = root.hex()
        ok, message = check(bundle, trusted)
        if ok and "--key" in options:
            message += ", signed by %s" % options["--key"].split("+")[0]
    except (KeyError, ValueError, TypeError) as e:
        print("unreadable evidence: %s" % e, file=sys.stderr)
        return 2
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
