#!/usr/bin/env python3
"""ORAS Python SDK with credentials: push an artifact as USER:PASSWORD, pull it back anonymously,
and check that an anonymous push is refused.

Usage: oras_auth.py HOST:PORT REPO USER PASSWORD WORKDIR
Prints nothing on success; on failure one line with the reason, exit 1.
"""

import os
import sys

for var in ("REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
            "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "*"

import oras.client  # noqa: E402


def main():
    host, repo, user, password, work = sys.argv[1:6]
    src = os.path.join(work, "oras-artifact.txt")
    data = b"pushed by oras with credentials\n"
    with open(src, "wb") as f:
        f.write(data)
    ref = f"{host}/{repo}:v1"
    old = os.getcwd()
    os.chdir(work)
    try:
        anon = oras.client.OrasClient(hostname=host, insecure=True)
        try:
            anon.push(files=["oras-artifact.txt"], target=f"{host}/{repo}:anon")
            print("anonymous oras push was accepted")
            return 1
        except Exception:  # noqa: BLE001 - any refusal will do; the status is checked with curl
            pass
        client = oras.client.OrasClient(hostname=host, insecure=True)
        client.login(username=user, password=password, hostname=host)
        resp = client.push(files=["oras-artifact.txt"], target=ref)
        if resp.status_code not in (200, 201):
            print(f"push answered {resp.status_code}")
            return 1
        out = os.path.join(work, "oras-pulled")
        os.makedirs(out, exist_ok=True)
        files = oras.client.OrasClient(hostname=host, insecure=True).pull(target=ref, outdir=out)
        got = open(files[0], "rb").read() if files else b""
        if got != data:
            print(f"anonymous pull returned {got[:60]!r}")
            return 1
    finally:
        os.chdir(old)
    return 0


if __name__ == "__main__":
    sys.exit(main())
