#!/usr/bin/env python3
"""Issues JWTs with PyJWT (an independent implementation) for the tests.

stdin: a JSON list of {"claims": {...}, "alg": "HS256"|"none", "headers": {...}}
stdout: one JSON object per token: {"token": "...", "sha256": "<hex of token>"}
"""
import hashlib
import json
import sys

import jwt

KEY = "pg_authaudit-test-signing-key-0123456789abcdef"

for spec in json.load(sys.stdin):
    alg = spec.get("alg", "HS256")
    token = jwt.encode(spec["claims"], None if alg == "none" else KEY,
                       algorithm=alg, headers=spec.get("headers"))
    print(json.dumps({"token": token,
                      "sha256": hashlib.sha256(token.encode()).hexdigest()}))
