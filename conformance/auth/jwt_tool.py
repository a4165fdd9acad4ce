#!/usr/bin/env python3
"""Test ServiceAccount tokens for conformance/auth/run.sh (PyPI `cryptography`).

  jwt_tool.py keys DIR                 make an EC P-256 key (kid ec1) and an RSA key (kid rsa1), the
                                       JWKS of both (DIR/jwks.json) and a key outside it (DIR/other)
  jwt_tool.py mint DIR NS [opts]       print a token for system:serviceaccount:NS:builder
      --alg ES256|RS256|none  --kid K  --exp SECONDS (from now, may be negative)
      --aud A  --iss I  --other (sign with the key that is not in the JWKS)
"""

import argparse
import base64
import json
import os
import sys
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "registry"


def b64(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def int_bytes(n: int, size: int = 0) -> bytes:
    return n.to_bytes(size or (n.bit_length() + 7) // 8, "big")


def save(key, path):
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))


def load(path):
    with open(path, "rb") as f:
        return serialization.load_pem_private_key(f.read(), None)


def keys(d):
    ec_key = ec.generate_private_key(ec.SECP256R1())
    rsa_key = rsa.generate_private_key(65537, 2048)
    other = ec.generate_private_key(ec.SECP256R1())
    save(ec_key, os.path.join(d, "ec1.pem"))
    save(rsa_key, os.path.join(d, "rsa1.pem"))
    save(other, os.path.join(d, "other.pem"))
    ep = ec_key.public_key().public_numbers()
    rp = rsa_key.public_key().public_numbers()
    jwks = {"keys": [
        {"kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig", "alg": "ES256",
         "x": b64(int_bytes(ep.x, 32)), "y": b64(int_bytes(ep.y, 32))},
        {"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256",
         "n": b64(int_bytes(rp.n)), "e": b64(int_bytes(rp.e))},
    ]}
    with open(os.path.join(d, "jwks.json"), "w") as f:
        json.dump(jwks, f)


def mint(a):
    now = int(time.time())
    header = {"alg": a.alg, "kid": a.kid or ("rsa1" if a.alg == "RS256" else "ec1"), "typ": "JWT"}
    claims = {
        "iss": a.iss, "aud": [a.aud], "iat": now, "nbf": now - 5, "exp": now + a.exp,
        "sub": f"system:serviceaccount:{a.ns}:builder",
        "kubernetes.io": {"namespace": a.ns, "serviceaccount": {"name": "builder"}},
    }
    signed = (b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())).encode()
    if a.alg == "none":
        sig = b""
    elif a.alg == "RS256":
        key = load(os.path.join(a.dir, "rsa1.pem"))
        sig = key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    else:
        key = load(os.path.join(a.dir, "other.pem" if a.other else "ec1.pem"))
        r, s = decode_dss_signature(key.sign(signed, ec.ECDSA(hashes.SHA256())))
        sig = int_bytes(r, 32) + int_bytes(s, 32)
    print(signed.decode() + "." + b64(sig))


def main():
    if sys.argv[1] == "keys":
        keys(sys.argv[2])
        return
    p = argparse.ArgumentParser()
    p.add_argument("cmd")
    p.add_argument("dir")
    p.add_argument("ns")
    p.add_argument("--alg", default="ES256")
    p.add_argument("--kid")
    p.add_argument("--exp", type=int, default=600)
    p.add_argument("--aud", default=AUDIENCE)
    p.add_argument("--iss", default=ISSUER)
    p.add_argument("--other", action="store_true")
    mint(p.parse_args())


if __name__ == "__main__":
    main()
