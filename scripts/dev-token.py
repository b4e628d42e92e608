#!/usr/bin/env python3
"""A development identity for authaudit-api (the demo, the benchmarks).

    scripts/dev-token.py DIR ROLE ISSUER AUDIENCE [HOURS]

Makes an Ed25519 signing key (or reuses DIR/dev-key.pem), writes its public
half to DIR/jwks.json (the file `identity.jwks_file` names) and the private
half to DIR/dev-key.pem (mode 600), and prints a token naming ROLE in the
claim `authaudit_role`, valid for HOURS (default 2). A stand-in for an identity provider on one
machine: production tokens come from the organisation's provider.
"""
import base64
import json
import os
import sys
import time

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def main(directory, role, issuer, audience, hours="2"):
    pem = os.path.join(directory, "dev-key.pem")
    if os.path.exists(pem):
        with open(pem, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
    else:
        key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    with open(os.path.join(directory, "jwks.json"), "w") as f:
        json.dump({"keys": [{"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig",
                             "kid": "dev", "x": b64(public)}]}, f)
    fd = os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    now = int(time.time())
    header = b64(json.dumps({"alg": "EdDSA", "typ": "JWT", "kid": "dev"}).encode())
    claims = b64(json.dumps({"iss": issuer, "aud": audience, "sub": f"{role}@dev", "iat": now,
                             "exp": now + int(float(hours) * 3600), "authaudit_role": role}).encode())
    signed = f"{header}.{claims}"
    print(f"{signed}.{b64(key.sign(signed.encode()))}")


if __name__ == "__main__":
    if len(sys.argv) not in (5, 6):
        sys.exit(__doc__)
    main(*sys.argv[1:])
