#!/usr/bin/env python3
"""Runs every ```sql example of README.md and docs/*.md, as written, with
psql against a throwaway PostgreSQL 15 cluster, so that a documented
example that no longer runs fails the build.

Each block runs in a fresh database copied from one that holds the
extension and tests/docs/fixture.sql (tenant agency-1 with a day of traffic
and a campaign). An HTML comment on the line before a block's fence
changes that:

    <!-- docs-test: database=agency -->     the fresh database has this name
    <!-- docs-test: empty -->               a database without the extension
    <!-- docs-test: error=55000 -->         the block must fail with this SQLSTATE
    <!-- docs-test: skip (reason) -->       not run; the reason is printed

Roles a block creates are dropped after it. The server must still be up at
the end (no example may crash it).

    tests/docs_examples.py [FILE ...]     (default: README.md docs/*.md)
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PSQL = "/usr/lib/postgresql/15/bin/psql"
DIRECTIVE = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->")


def blocks(path):
    """(line, sql, directive) of each ```sql block of the file."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out = []
    i = 0
    while i < len(lines):
        if lines[i].strip().startswith("```sql"):
            start = i
            directive = ""
            if start > 0:
                m = DIRECTIVE.search(lines[start - 1])
                if m:
                    directive = m.group(1)
            body = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            # Blocks inside numbered lists are indented.
            indent = min((len(b) - len(b.lstrip()) for b in body if b.strip()), default=0)
            out.append((start + 1, "\n".join(b[indent:] for b in body), directive))
        i += 1
    return out


class Cluster:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="authaudit-docs-")
        import socket

        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        subprocess.run(
            [os.path.join(ROOT, "scripts/testcluster.sh"), "start", self.dir, str(self.port),
             "--watch", str(os.getpid())],
            check=True, stdout=subprocess.DEVNULL)

    def psql(self, db, sql, verbose=False, tuples=False):
        args = [PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                "-p", str(self.port), "-U", "postgres", "-d", db]
        if tuples:
            args += ["-A", "-t"]
        if verbose:
            sql = "\\set VERBOSITY verbose\n" + sql
        try:
            return subprocess.run(args, input=sql, capture_output=True, text=True, cwd=ROOT,
                                  timeout=120)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 1, "", "did not finish within 120 s")

    def must(self, db, sql):
        r = self.psql(db, sql, tuples=True)
        if r.returncode != 0:
            raise SystemExit(f"docs_examples: setup failed: {r.stderr}")
        return r.stdout

    def stop(self):
        subprocess.run([os.path.join(ROOT, "scripts/testcluster.sh"), "stop", self.dir],
                       stdout=subprocess.DEVNULL)
        shutil.rmtree(self.dir, ignore_errors=True)


def main():
    files = sys.argv[1:] or ["README.md"] + sorted(glob.glob(os.path.join(ROOT, "docs/*.md")))
    c = Cluster()
    failures = []
    ran = skipped = 0
    try:
        c.must("postgres", "CREATE DATABASE docs_template")
        c.must("docs_template", open(os.path.join(ROOT, "tests/docs/fixture.sql")).read())
        for path in files:
            rel = os.path.relpath(os.path.join(ROOT, path) if not os.path.isabs(path) else path, ROOT)
            for line, sql, directive in blocks(os.path.join(ROOT, rel)):
                where = f"{rel}:{line}"
                opts = dict(o.split("=", 1) if "=" in o else (o, "") for o in directive.split())
                if directive.startswith("skip"):
                    skipped += 1
                    print(f"skip {where}: {directive[4:].strip()}")
                    continue
                db = opts.get("database", "docs_example")
                template = "template0" if "empty" in opts else "docs_template"
                roles = set(c.must("postgres", "SELECT rolname FROM pg_roles").split())
                c.must("postgres", f'DROP DATABASE IF EXISTS "{db}"')
                c.must("postgres", f'CREATE DATABASE "{db}" TEMPLATE {template}')
                r = c.psql(db, sql, verbose="error" in opts)
                ran += 1
                if "error" in opts:
                    state = opts["error"]
                    if r.returncode == 0 or f"ERROR:  {state}:" not in r.stderr:
                        failures.append(f"{where}: expected SQLSTATE {state}, got: {r.stderr.strip() or 'success'}")
                    else:
                        print(f"ok   {where} (refused with {state}, as documented)")
                elif r.returncode != 0:
                    failures.append(f"{where}: {r.stderr.strip()}")
                else:
                    print(f"ok   {where}")
                # Leave the cluster as the next block expects it.
                c.must("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
                c.must("postgres", "ALTER SYSTEM RESET ALL; SELECT pg_reload_conf();")
                for role in set(c.must("postgres", "SELECT rolname FROM pg_roles").split()) - roles:
                    c.must("postgres", f'DROP ROLE "{role}"')
        # The server is still up: no example crashed it.
        c.must("postgres", "SELECT 1")
    finally:
        c.stop()
    print(f"docs_examples: {ran} run, {skipped} skipped, {len(failures)} failed")
    for f in failures:
        print(f"FAIL {f}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
