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

A ```sh block runs only when marked `<!-- docs-test: api -->`: with bash,
against authaudit-api (target/debug) started on the fixture's database,
its `http://127.0.0.1:8080` the API's real address, $TOKEN a token naming
agency1_analyst (reads agency-1), $WRITER_TOKEN agency1_writer and
$HELPDESK_TOKEN agency1_helpdesk (reads and writes agency-1), and every
curl failing on an HTTP error.

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


def blocks(path, kind="sql"):
    """(line, text, directive) of each ```KIND block of the file."""
    lines = open(path, encoding="utf-8").read().split("\n")
    out = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```" + kind or lines[i].strip().startswith("```" + kind + " "):
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


# agency1_writer is the fixture's (tests/docs/fixture.sql).
API_ROLES = """
CREATE ROLE docs_api LOGIN NOINHERIT;
CREATE ROLE agency1_analyst IN ROLE authaudit_reader;
CREATE ROLE agency1_helpdesk IN ROLE authaudit_reader, authaudit_writer;
GRANT agency1_analyst, agency1_writer, agency1_helpdesk TO docs_api;
INSERT INTO authaudit.tenant_scope (role_name, tenant_id, org_id, can_read, can_write) VALUES
  ('agency1_analyst', 'agency-1', NULL, true, false),
  ('agency1_helpdesk', 'agency-1', NULL, true, true);
"""


def run_api_block(c, where, script):
    """Runs one ```sh block against a fresh API; returns an error or None."""
    import socket
    import time
    import urllib.request

    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    binary = os.path.join(target, "debug", "authaudit-api")
    if not os.path.exists(binary):
        return f"{binary} is missing: cargo build -p authaudit-api"
    work = tempfile.mkdtemp(prefix="authaudit-docs-api-")
    c.must("docs_api", API_ROLES)
    tokens = {}
    for var, role in [("TOKEN", "agency1_analyst"), ("WRITER_TOKEN", "agency1_writer"),
                      ("HELPDESK_TOKEN", "agency1_helpdesk")]:
        tokens[var] = subprocess.run(
            [os.path.join(ROOT, "scripts/dev-token.py"), work, role, "https://docs.invalid", "authaudit-api"],
            check=True, capture_output=True, text=True).stdout.strip()
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with open(os.path.join(work, "api.toml"), "w") as f:
        f.write(f"""listen = "127.0.0.1:{port}"
[database]
url = "host=127.0.0.1 port={c.port} user=docs_api dbname=docs_api"
[identity]
issuer = "https://docs.invalid"
audience = "authaudit-api"
jwks_file = "{work}/jwks.json"
roles = ["agency1_analyst", "agency1_writer", "agency1_helpdesk"]
[admin]
client_id = "authaudit-admin"
authorization_endpoint = "https://idp.example.org/realms/agency/protocol/openid-connect/auth"
token_endpoint = "https://idp.example.org/realms/agency/protocol/openid-connect/token"
redirect_uri = "http://127.0.0.1:{port}/admin/callback"
""")
    api = subprocess.Popen([binary, "--config", os.path.join(work, "api.toml")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        else:
            return "the API did not start"
        prelude = 'set -euo pipefail\ncurl() { command curl --fail-with-body "$@"; }\n'
        body = script.replace("http://127.0.0.1:8080", f"http://127.0.0.1:{port}")
        r = subprocess.run(["bash", "-c", prelude + body], cwd=work, capture_output=True, text=True,
                           env={**os.environ, **tokens}, timeout=120)
        if r.returncode != 0:
            return f"exit {r.returncode}: {r.stdout[-500:]}{r.stderr[-500:]}"
        return None
    finally:
        api.terminate()
        api.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


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
        for path in files:
            rel = os.path.relpath(os.path.join(ROOT, path) if not os.path.isabs(path) else path, ROOT)
            for line, script, directive in blocks(os.path.join(ROOT, rel), "sh"):
                if directive.split()[:1] != ["api"]:
                    continue
                where = f"{rel}:{line}"
                roles = set(c.must("postgres", "SELECT rolname FROM pg_roles").split())
                c.must("postgres", 'DROP DATABASE IF EXISTS "docs_api"')
                c.must("postgres", 'CREATE DATABASE "docs_api" TEMPLATE docs_template')
                error = run_api_block(c, where, script)
                ran += 1
                if error:
                    failures.append(f"{where}: {error}")
                else:
                    print(f"ok   {where} (against authaudit-api)")
                c.must("postgres", 'DROP DATABASE IF EXISTS "docs_api" WITH (FORCE)')
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
