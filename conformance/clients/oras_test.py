#!/usr/bin/env python3
"""Real-client checks with the ORAS Python SDK (PyPI `oras`).

Usage: oras_test.py artifact|referrers HOST:PORT WORKDIR

artifact:  push a file as an artifact (config media type = artifact type), with a monolithic and
           with a chunked upload; pull each back into an empty folder and compare bytes and the
           manifest the registry serves.
referrers: push a subject artifact, then two referrers whose manifests carry `subject` (one with an
           explicit `artifactType` and the OCI empty config, one relying on the config media type),
           then list them with curl via GET /v2/<name>/referrers/<digest> and check the descriptors.

Prints nothing on success; on failure prints one line `reason` to stdout and exits 1.
"""

import hashlib
import json
import os
import subprocess
import sys

# Plain HTTP to loopback only; make sure no CA/proxy settings of the environment interfere.
for var in ("REQUESTS_CA_BUNDLE", "AWS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
            "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(var, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "*"

import oras.client  # noqa: E402
import oras.defaults  # noqa: E402
import oras.oci  # noqa: E402
import oras.provider  # noqa: E402

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"


class Failure(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ArtifactTypeRegistry(oras.provider.Registry):
    """The SDK's push() has no artifactType parameter; this adds it to the manifest it uploads."""

    artifact_type = None
    empty_config = False

    def upload_manifest(self, manifest, container):
        if self.artifact_type:
            manifest["artifactType"] = self.artifact_type
        if self.empty_config:
            # The OCI "empty" config: the 2-byte `{}` blob, which the SDK uploads by default.
            manifest["config"]["mediaType"] = OCI_EMPTY
        return super().upload_manifest(manifest, container)


def curl(url, accept=None):
    """GET with the curl program; returns (status, headers dict lower-case, body bytes)."""
    cmd = ["curl", "-sS", "--noproxy", "*", "--max-time", "30", "-D", "-", url]
    if accept:
        cmd += ["-H", "Accept: " + accept]
    out = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body


def get_manifest_raw(host, repo, ref):
    status, headers, body = curl(f"http://{host}/v2/{repo}/manifests/{ref}",
                                 accept=f"{OCI_MANIFEST}, {OCI_INDEX}")
    check(status == 200, f"GET manifest {repo}:{ref} -> {status}")
    return headers, body


def push_file(client, host, repo, tag, workdir, name, content, media_type, config_media_type,
              subject=None, chunk_size=None):
    path = os.path.join(workdir, name)
    with open(path, "wb") as f:
        f.write(content)
    manifest_config = None  # None: the SDK's 2-byte `{}` config
    if config_media_type:
        cfg = os.path.join(workdir, name + ".config.json")
        with open(cfg, "wb") as f:
            f.write(json.dumps({"test": name}).encode())
        manifest_config = f"{cfg}:{config_media_type}"
    old = os.getcwd()
    os.chdir(workdir)  # the SDK requires files below the working directory
    try:
        resp = client.push(
            target=f"{host}/{repo}:{tag}",
            files=[f"{name}:{media_type}"],
            manifest_config=manifest_config,
            manifest_annotations={"org.example.test": name},
            subject=subject,
            do_chunked=chunk_size is not None,
            chunk_size=chunk_size or oras.defaults.default_chunksize,
            quiet=True,
        )
    finally:
        os.chdir(old)
    check(resp.status_code == 201, f"manifest PUT for {repo}:{tag} returned {resp.status_code}")
    return resp


def test_artifact(host, workdir):
    client = oras.client.OrasClient(hostname=host, insecure=True)
    repo, tag = "clients/oras-artifact", "v1"
    payload = os.urandom(300_000) + b"oras payload end"
    art_type = "application/vnd.example.clients-test.config.v1+json"
    src = os.path.join(workdir, "push")
    os.makedirs(src)
    resp = push_file(client, host, repo, tag, src, "payload.bin", payload,
                     "application/vnd.example.payload.v1", art_type)
    put_digest = resp.headers.get("Docker-Content-Digest")

    headers, raw = get_manifest_raw(host, repo, tag)
    digest = sha256(raw)
    check(headers.get("docker-content-digest") == digest,
          f"Docker-Content-Digest {headers.get('docker-content-digest')} != sha256(body) {digest}")
    check(put_digest in (None, digest), f"PUT returned digest {put_digest}, GET body is {digest}")
    m = json.loads(raw)
    check(m.get("config", {}).get("mediaType") == art_type,
          f"config mediaType {m.get('config', {}).get('mediaType')} != {art_type}")
    check(len(m.get("layers", [])) == 1, f"expected 1 layer, got {len(m.get('layers', []))}")
    check(m["layers"][0]["digest"] == sha256(payload), "layer digest is not sha256(payload)")

    # Pull with the SDK into an empty folder, by tag and by digest.
    for ref in (tag, digest):
        dst = os.path.join(workdir, "pull-" + ref.replace(":", "_"))
        os.makedirs(dst)
        files = client.pull(target=f"{host}/{repo}{'@' if ':' in ref else ':'}{ref}", outdir=dst)
        check(len(files) == 1, f"pull {ref}: expected 1 file, got {files}")
        check(os.path.basename(files[0]) == "payload.bin", f"pull {ref}: file name {files[0]}")
        with open(files[0], "rb") as f:
            got = f.read()
        check(got == payload, f"pull {ref}: {len(got)} bytes differ from the {len(payload)} pushed")

    # The same with a chunked upload: POST, PATCH with Content-Range per 64 KiB chunk, PUT ?digest=
    payload2 = os.urandom(200_000) + b"chunked end"
    src2 = os.path.join(workdir, "push-chunked")
    os.makedirs(src2)
    push_file(client, host, repo, "chunked", src2, "chunked.bin", payload2,
              "application/vnd.example.payload.v1", art_type, chunk_size=65536)
    dst = os.path.join(workdir, "pull-chunked")
    os.makedirs(dst)
    files = client.pull(target=f"{host}/{repo}:chunked", outdir=dst)
    check(len(files) == 1, f"pull chunked: expected 1 file, got {files}")
    with open(files[0], "rb") as f:
        got = f.read()
    check(got == payload2, f"pull chunked: {len(got)} bytes differ from the {len(payload2)} pushed")

    tags = sorted(client.get_tags(f"{host}/{repo}"))
    check(tags == ["chunked", tag], f"tags {tags} != ['chunked', '{tag}']")


def test_referrers(host, workdir):
    client = ArtifactTypeRegistry(hostname=host, insecure=True)
    repo = "clients/oras-referrers"
    src = os.path.join(workdir, "ref")
    os.makedirs(src)
    push_file(client, host, repo, "subject", src, "subject.txt", b"the subject\n",
              "text/plain", "application/vnd.example.subject.config.v1+json")
    headers, raw = get_manifest_raw(host, repo, "subject")
    subj_digest = sha256(raw)
    subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=subj_digest, size=len(raw))

    # Referrer 1: explicit artifactType with the OCI empty config.
    sig_type = "application/vnd.example.signature.v1"
    client.artifact_type, client.empty_config = sig_type, True
    resp1 = push_file(client, host, repo, "sig", src, "sig.bin", b"signature bytes",
                      "application/vnd.example.signature.blob", None, subject=subject)
    check(resp1.headers.get("OCI-Subject") == subj_digest,
          f"PUT of a manifest with subject: OCI-Subject header is {resp1.headers.get('OCI-Subject')!r}, "
          f"expected {subj_digest}")
    # Referrer 2: no artifactType, so the registry must report the config media type.
    sbom_cfg_type = "application/vnd.example.sbom.config.v1+json"
    client.artifact_type, client.empty_config = None, False
    push_file(client, host, repo, "sbom", src, "sbom.json", b'{"sbom": true}',
              "application/vnd.example.sbom.blob", sbom_cfg_type, subject=subject)

    expected = {}
    for tag in ("sig", "sbom"):
        _, body = get_manifest_raw(host, repo, tag)
        expected[sha256(body)] = (tag, len(body), json.loads(body))

    status, hdrs, body = curl(f"http://{host}/v2/{repo}/referrers/{subj_digest}")
    check(status == 200, f"GET referrers -> {status}: {body[:200]!r}")
    ctype = hdrs.get("content-type", "")
    check(ctype.startswith(OCI_INDEX), f"referrers Content-Type {ctype!r}")
    index = json.loads(body)
    check(index.get("mediaType") == OCI_INDEX, f"referrers index mediaType {index.get('mediaType')}")
    got = {d["digest"]: d for d in index.get("manifests", [])}
    check(set(got) == set(expected),
          f"referrers list {sorted(got)} != pushed {sorted(expected)}")
    for dg, (tag, size, man) in expected.items():
        d = got[dg]
        want_type = sig_type if tag == "sig" else sbom_cfg_type
        check(d.get("artifactType") == want_type,
              f"referrer {tag}: artifactType {d.get('artifactType')!r} != {want_type!r}")
        check(d.get("size") == size, f"referrer {tag}: size {d.get('size')} != {size}")
        check(d.get("mediaType") == OCI_MANIFEST, f"referrer {tag}: mediaType {d.get('mediaType')}")
        check(d.get("annotations", {}).get("org.example.test") == man["annotations"]["org.example.test"],
              f"referrer {tag}: annotations {d.get('annotations')} not copied from the manifest")

    # Filtering by artifactType is optional; if applied it must be announced and correct.
    status, hdrs, body = curl(f"http://{host}/v2/{repo}/referrers/{subj_digest}?artifactType={sig_type}")
    check(status == 200, f"GET referrers?artifactType -> {status}")
    listed = [d["digest"] for d in json.loads(body).get("manifests", [])]
    if "artifacttype" in hdrs.get("oci-filters-applied", "").lower():
        check([expected[d][0] for d in listed] == ["sig"], f"filtered referrers {listed}")
    else:
        check(set(listed) == set(expected), f"unfiltered referrers {listed}")

    # A digest with no referrers gives an empty index, not 404.
    none_digest = sha256(b"no such manifest " + os.urandom(8))
    status, _, body = curl(f"http://{host}/v2/{repo}/referrers/{none_digest}")
    check(status == 200, f"GET referrers of an unknown digest -> {status}")
    check(json.loads(body).get("manifests") == [], f"unknown digest referrers: {body[:200]!r}")


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("artifact", "referrers"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, host, workdir = sys.argv[1:]
    os.makedirs(workdir, exist_ok=True)
    try:
        (test_artifact if mode == "artifact" else test_referrers)(host, workdir)
    except Failure as e:
        print(e)
        return 1
    except Exception as e:  # a client error is a failure with its message
        print(f"{type(e).__name__}: {e}".replace("\n", " ")[:400])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
