#!/usr/bin/env python3
"""Helpers of the pull-through cache suite (conformance/proxy/run.sh).

  helpers.py token-server DIR PORT     a Docker token service on 127.0.0.1:PORT: writes DIR/cert.pem
                                       (the bundle Distribution trusts) and signs ES256 tokens
                                       granting pull and push on the requested scope; logs each
                                       request to stdout
  helpers.py image DIR SEED [BIGMIB]   an OCI layout in DIR: tag `1` is an index of linux/amd64 and
                                       linux/arm64 images with small gzip'd tar layers whose content
                                       depends on SEED; with BIGMIB, tag `big` is one image with a
                                       layer of BIGMIB MiB of random bytes; with a fifth
                                       argument `in-index`, that layer is the amd64 image's
                                       second layer instead
  helpers.py hang PORT                 accepts connections on 127.0.0.1:PORT and never answers
  helpers.py htpasswd USER PASS        prints a bcrypt htpasswd line
"""

import base64
import datetime
import gzip
import hashlib
import io
import json
import os
import socket
import sys
import tarfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token_server(d, port):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "proxy-test-token-issuer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    with open(os.path.join(d, "cert.pem"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()

    class H(BaseHTTPRequestHandler):
        def do_GET(self):
            u = urlparse(self.path)
            q = parse_qs(u.query)
            access = []
            for scope in q.get("scope", []):
                parts = scope.split(":")
                if len(parts) >= 3 and parts[0] == "repository":
                    access.append({"type": "repository", "name": ":".join(parts[1:-1]),
                                   "actions": ["pull", "push"]})
            t = int(time.time())
            claims = {"iss": "proxy-test", "sub": "anyone", "aud": q.get("service", [""])[0],
                      "exp": t + 300, "nbf": t - 10, "iat": t, "jti": uuid.uuid4().hex,
                      "access": access}
            header = {"typ": "JWT", "alg": "ES256", "x5c": [x5c]}
            signing = (b64url(json.dumps(header).encode()) + "." +
                       b64url(json.dumps(claims).encode())).encode()
            r, s = decode_dss_signature(key.sign(signing, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
            tok = signing.decode() + "." + b64url(sig)
            body = json.dumps({"token": tok, "access_token": tok, "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            print(f"token {u.query}", flush=True)

        def log_message(self, *a):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()


class Layout:
    def __init__(self, d):
        self.d = d
        os.makedirs(os.path.join(d, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(d, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                      "manifests": []}

    def blob(self, data, mt):
        h = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.d, "blobs", "sha256", h), "wb") as f:
            f.write(data)
        return {"mediaType": mt, "digest": "sha256:" + h, "size": len(data)}

    def blob_file(self, path, mt):
        h = hashlib.sha256()
        n = 0
        with open(path, "rb") as f:
            for c in iter(lambda: f.read(1 << 20), b""):
                h.update(c)
                n += len(c)
        os.rename(path, os.path.join(self.d, "blobs", "sha256", h.hexdigest()))
        return {"mediaType": mt, "digest": "sha256:" + h.hexdigest(), "size": n}

    def image(self, layers, arch, diff_ids):
        config = {"architecture": arch, "os": "linux",
                  "config": {"Cmd": ["/hello"]},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        cd = self.blob(json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
        m = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
             "config": cd, "layers": layers}
        md = self.blob(json.dumps(m).encode(), "application/vnd.oci.image.manifest.v1+json")
        md["platform"] = {"architecture": arch, "os": "linux"}
        return md

    def tag(self, desc, tag):
        desc = dict(desc)
        desc["annotations"] = {"org.opencontainers.image.ref.name": tag}
        self.index["manifests"].append(desc)

    def save(self):
        with open(os.path.join(self.d, "index.json"), "w") as f:
            json.dump(self.index, f)


def small_layer(content):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        info = tarfile.TarInfo("hello")
        info.size = len(content)
        info.mode = 0o755
        info.mtime = 0
        t.addfile(info, io.BytesIO(content))
    tar = raw.getvalue()
    return gzip.compress(tar, mtime=0), "sha256:" + hashlib.sha256(tar).hexdigest()


def big_layer(lay, d, big_mib):
    """An uncompressed tar layer of BIGMIB MiB of random bytes: its digest is its diff id."""
    path = os.path.join(d, "big.tmp")
    with open(path, "wb") as f:
        info = tarfile.TarInfo("big")
        info.size = big_mib << 20
        with tarfile.open(fileobj=f, mode="w") as t:
            t.addfile(info, io.BytesIO(os.urandom(info.size)))
    return lay.blob_file(path, "application/vnd.oci.image.layer.v1.tar")


def image(d, seed, big_mib, big_in_index=False):
    lay = Layout(d)
    big = big_layer(lay, d, big_mib) if big_mib else None
    children = []
    for arch in ("amd64", "arm64"):
        gz, diff = small_layer(f"#!/bin/sh\necho {arch} {seed}\n".encode())
        layers = [lay.blob(gz, "application/vnd.oci.image.layer.v1.tar+gzip")]
        diffs = [diff]
        if big_in_index and arch == "amd64":
            layers.append(big)
            diffs.append(big["digest"])
        children.append(lay.image(layers, arch, diffs))
    idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
           "manifests": children}
    lay.tag(lay.blob(json.dumps(idx).encode(), "application/vnd.oci.image.index.v1+json"), "1")
    if big and not big_in_index:
        img = lay.image([big], "amd64", [big["digest"]])
        img.pop("platform")
        lay.tag(img, "big")
    lay.save()


def hang(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    held = []
    while True:
        c, _ = s.accept()
        held.append(c)


def main():
    cmd = sys.argv[1]
    if cmd == "token-server":
        token_server(sys.argv[2], int(sys.argv[3]))
    elif cmd == "image":
        image(sys.argv[2], sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0,
              len(sys.argv) > 5 and sys.argv[5] == "in-index")
    elif cmd == "hang":
        hang(int(sys.argv[2]))
    elif cmd == "htpasswd":
        import warnings
        warnings.simplefilter("ignore")
        import crypt
        print(f"{sys.argv[2]}:{crypt.crypt(sys.argv[3], crypt.mksalt(crypt.METHOD_BLOWFISH))}")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
