#!/usr/bin/env python3
"""Events and the Distribution drop-in, end to end, against a real `registry` binary.

    conformance/events/run.py [REGISTRY_BINARY]

Starts everything on 127.0.0.1 in a temp folder: the registry (from Distribution-format YAML
written here, or TOML), a notification receiver (in this process), moto_server for S3, and uses
skopeo, buildah and podman (private storage roots under the temp folder; root needed) for real
pushes and pulls. Prints PASS/FAIL per case and exits non-zero on a failure.
"""

import base64
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "x86_64-unknown-linux-gnu", "release", "registry")
WORK = tempfile.mkdtemp(prefix="registry-events.")
PROCS = []
RESULTS = {"pass": 0, "fail": 0}
for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "AWS_CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
    os.environ.pop(k, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def log(msg):
    print(msg, flush=True)


def case(name, fn):
    t0 = time.time()
    try:
        fn()
        RESULTS["pass"] += 1
        log(f"PASS {name} ({time.time() - t0:.1f}s)")
    except Exception as e:  # noqa: BLE001 - report every failure the same way
        RESULTS["fail"] += 1
        log(f"FAIL {name}: {e}")


# ------------------------------------------------------------------ receiver
class Receiver:
    """An HTTP endpoint that records each POST body; can be down, up, or hanging."""

    def __init__(self):
        self.port = free_port()
        self.bodies = []
        self.headers = []
        self.mode = "ok"
        self.server = None
        self.lock = threading.Lock()

    def up(self):
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                if rec.mode == "hang":
                    time.sleep(3600)
                    return
                with rec.lock:
                    rec.bodies.append((self.headers.get("Content-Type"), json.loads(body)))
                    rec.headers.append(self.headers.get("Authorization"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), H)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def down(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def events(self):
        with self.lock:
            out = []
            for _, b in self.bodies:
                out.extend(b.get("events", []))
            return out

    def unique(self):
        seen = {}
        for e in self.events():
            seen.setdefault(e["id"], e)
        return list(seen.values())

    def url(self):
        return f"http://127.0.0.1:{self.port}/events"


# ------------------------------------------------------------------ registry
class Registry:
    def __init__(self, args, name, env=None):
        self.args = args
        self.name = name
        self.env = dict(os.environ, **(env or {}))
        self.proc = None

    def start(self, port):
        self.port = port
        logf = open(os.path.join(WORK, f"{self.name}.log"), "ab")
        self.proc = subprocess.Popen([BIN] + self.args, stdout=logf, stderr=logf, env=self.env)
        PROCS.append(self.proc)
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if http_get(port, "/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {tail(self.name)}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready: {tail(self.name)}")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def tail(name, n=15):
    try:
        with open(os.path.join(WORK, f"{name}.log"), "rb") as f:
            return b" | ".join(f.read().splitlines()[-n:]).decode(errors="replace")
    except OSError:
        return ""


def http_get(port, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    try:
        with OPENER.open(req, timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def http_req(port, method, path, body=None, ctype=None, headers=None):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method)
    if ctype:
        req.add_header("Content-Type", ctype)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with OPENER.open(req, timeout=60) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def push_blob(port, repo, data):
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    st, h, _ = http_req(port, "POST", f"/v2/{repo}/blobs/uploads/")
    assert st == 202, f"upload start {st}"
    loc = h["Location"]
    sep = "&" if "?" in loc else "?"
    path = loc if loc.startswith("/") else "/" + loc.split("/", 3)[3]
    st, _, b = http_req(port, "PUT", f"{path}{sep}digest={d}", data, "application/octet-stream")
    assert st == 201, f"blob put {st} {b[:200]}"
    return d, len(data)


MT = "application/vnd.oci.image.manifest.v1+json"


def push_image(port, repo, ref, salt):
    """Pushes a one-layer image; returns (digest, size) of its manifest."""
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "salt": salt}).encode()
    layer = f"layer {salt}".encode()
    cd, cs = push_blob(port, repo, cfg)
    ld, ls = push_blob(port, repo, layer)
    m = json.dumps({
        "schemaVersion": 2, "mediaType": MT,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld, "size": ls}],
    }).encode()
    st, _, b = http_req(port, "PUT", f"/v2/{repo}/manifests/{ref}", m, MT)
    assert st == 201, f"manifest put {st} {b[:200]}"
    return "sha256:" + hashlib.sha256(m).hexdigest(), len(m)


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def manifest_events(rcv, repo=None):
    return [e for e in rcv.unique() if e["target"].get("mediaType") != "application/octet-stream"
            and (repo is None or e["target"]["repository"] == repo)]


def dist_yaml(port, dbg, root, rcv, extra_storage="", formatter="text"):
    return f"""version: 0.1
log:
  level: info
  formatter: {formatter}
  fields:
    service: registry
    environment: test
storage:
{extra_storage or f'''  filesystem:
    rootdirectory: {root}'''}
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:{port}
  secret: asecretforlocaldevelopment
  headers:
    X-Content-Type-Options: [nosniff]
  debug:
    addr: 127.0.0.1:{dbg}
notifications:
  endpoints:
    - name: receiver
      url: {rcv.url()}
      headers:
        Authorization: [Bearer events-test]
      timeout: 2s
      threshold: 3
      backoff: 500ms
      ignoredmediatypes:
        - application/octet-stream
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
"""


def write(name, text):
    p = os.path.join(WORK, name)
    with open(p, "w") as f:
        f.write(text)
    return p


def make_multiarch_layout(path):
    """An OCI image layout holding a two-platform index, for skopeo to push."""
    blobs = os.path.join(path, "blobs", "sha256")
    os.makedirs(blobs)

    def put(data):
        d = hashlib.sha256(data).hexdigest()
        with open(os.path.join(blobs, d), "wb") as f:
            f.write(data)
        return {"digest": "sha256:" + d, "size": len(data)}

    manifests = []
    for arch in ("amd64", "arm64"):
        cfg = put(json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode())
        layer = put(f"layer for {arch}".encode())
        m = put(json.dumps({
            "schemaVersion": 2, "mediaType": MT,
            "config": dict(cfg, mediaType="application/vnd.oci.image.config.v1+json"),
            "layers": [dict(layer, mediaType="application/vnd.oci.image.layer.v1.tar")],
        }).encode())
        manifests.append(dict(m, mediaType=MT, platform={"architecture": arch, "os": "linux"}))
    idx_mt = "application/vnd.oci.image.index.v1+json"
    idx = put(json.dumps({"schemaVersion": 2, "mediaType": idx_mt, "manifests": manifests}).encode())
    with open(os.path.join(path, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [dict(idx, mediaType=idx_mt, annotations={"org.opencontainers.image.ref.name": "v1"})]}, f)
    with open(os.path.join(path, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    return idx["digest"], [m["digest"] for m in manifests]


def skopeo(*args):
    r = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"skopeo {' '.join(args)}: {r.stderr[-500:]}"


def htpasswd_file(name, user, password):
    """An htpasswd file with one bcrypt entry, written by `htpasswd -B` (apache2-utils, installed
    when missing)."""
    if not shutil.which("htpasswd"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.run(["apt-get", "install", "-y", "-q", "apache2-utils"], capture_output=True, env=env).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
            subprocess.run(["apt-get", "install", "-y", "-q", "apache2-utils"], capture_output=True, env=env)
    path = os.path.join(WORK, name)
    r = subprocess.run(["htpasswd", "-B", "-b", "-c", path, user, password], capture_output=True, text=True)
    assert r.returncode == 0, f"htpasswd: {r.stderr}"
    return path


LOG_FIELDS = {"service": "registry", "environment": "test"}


def check_log_fields(logname, fmt):
    """Every line of the registry log `logname` carries dist_yaml's log.fields; returns the
    lines."""
    lines = [l for l in open(os.path.join(WORK, f"{logname}.log"), errors="replace").read().splitlines() if l.strip()]
    assert lines, f"{logname}.log is empty"
    for l in lines:
        if fmt == "json":
            v = json.loads(l)
            got = {k: v.get(k) for k in LOG_FIELDS}
            assert got == LOG_FIELDS, f"log.fields missing from a JSON line: {l[:300]}"
        else:
            assert l.endswith(" environment=test service=registry"), f"log.fields missing from a line: {l[:300]}"
    return lines


def run_tool(argv, timeout=180):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{' '.join(argv[:6])} ...: {r.stderr[-500:]}"
    return r.stdout.strip()


def umount_under(folder):
    """Unmounts what podman and buildah left mounted under `folder`, deepest first."""
    with open("/proc/mounts") as f:
        points = [l.split()[1] for l in f if l.split()[1].startswith(folder)]
    for m in sorted(points, reverse=True):
        if subprocess.run(["umount", m], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", m], capture_output=True)


def container_tools():
    """buildah (a build store and a pull store) and podman with private storage under WORK."""
    def store(name):
        return ["--root", os.path.join(WORK, name, "root"), "--runroot", os.path.join(WORK, name, "runroot"),
                "--storage-driver", "overlay"]
    os.makedirs(os.path.join(WORK, "podman", "tmp"), exist_ok=True)
    podman = ["podman", *store("podman"), "--tmpdir", os.path.join(WORK, "podman", "tmp"),
              "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    return ["buildah", *store("build")], ["buildah", *store("pull")], podman


def raw_digest(port, ref, creds=None):
    """The digest of the manifest `ref` (repo:tag) on 127.0.0.1:`port`, as skopeo reads it."""
    args = ["skopeo", "inspect", "--tls-verify=false", "--raw", f"docker://127.0.0.1:{port}/{ref}"]
    if creds:
        args[2:2] = ["--creds", creds]
    r = subprocess.run(args, capture_output=True, timeout=120)
    assert r.returncode == 0, f"skopeo inspect {ref} on {port}: {r.stderr[-300:]}"
    return "sha256:" + hashlib.sha256(r.stdout).hexdigest()


def skopeo_fails(*args):
    """Whether skopeo with `args` fails (for what must be refused)."""
    return subprocess.run(["skopeo", *args], capture_output=True, timeout=120).returncode != 0


def new_user(name, user):
    """A free port, a fresh password for `user` and an htpasswd file `name` holding it."""
    password = f"{user}-{os.getpid()}-{time.time_ns()}"
    return free_port(), password, htpasswd_file(name, user, password)


def log_text(name):
    with open(os.path.join(WORK, f"{name}.log"), errors="replace") as f:
        return f.read()


def push_layout(port, repo, creds=None):
    """Pushes a new two-platform OCI layout to `repo`:v1 with skopeo (with `creds`, when given)."""
    layout = os.path.join(WORK, repo.replace("/", "-") + "-layout")
    make_multiarch_layout(layout)
    creds = ["--dest-creds", creds] if creds else []
    skopeo("copy", "--all", "--dest-tls-verify=false", *creds, f"oci:{layout}:v1", f"docker://127.0.0.1:{port}/{repo}:v1")
    return layout


def access_lines(logname, repo):
    """The access-log lines of the registry log `logname` for requests on `repo`."""
    text = open(os.path.join(WORK, f"{logname}.log"), errors="replace").read()
    return [l for l in text.splitlines() if "registry::access" in l and f'repository="{repo}"' in l]


# ------------------------------------------------------------------ cases
def main():
    if not shutil.which("skopeo"):
        log("FAIL setup: skopeo missing (scripts/install-test-deps.sh installs it)")
        return 1
    rcv = Receiver()
    rcv.up()
    port, dbg = free_port(), free_port()
    cfg = write("config.yml", dist_yaml(port, dbg, os.path.join(WORK, "fs"), rcv))
    reg = Registry(["serve", cfg], "fs")
    state = {}

    def distribution_config_runs_unchanged():
        reg.start(port)
        st, h, _ = http_get(port, "/")
        assert st == 200, f"/ answered {st}"
        st, h, _ = http_get(port, "/v2/")
        assert st == 200 and h.get("X-Content-Type-Options") == "nosniff", f"/v2/ {st} {h}"
        st, _, b = http_get(dbg, "/debug/health")
        assert st == 200, f"/debug/health {st} {b}"
        st, _, _ = http_get(port, "/v2/team/none/tags/list")
        assert st == 404, f"tags of an unknown repository: {st}"
        lines = check_log_fields("fs", "text")
        assert any("CNCF Distribution configuration" in l for l in lines), "no start-up line naming the Distribution config"
        assert any("registry serving" in l for l in lines), "no start-up line 'registry serving'"
        assert any("registry::access" in l and 'repository="team/none"' in l for l in lines), "no access-log line for the request"

    def podman_and_buildah_push_and_pull():
        missing = [t for t in ("buildah", "podman") if not shutil.which(t)]
        assert not missing and os.path.exists("/bin/busybox"), f"missing {missing} or /bin/busybox (scripts/install-test-deps.sh)"
        assert os.geteuid() == 0, "podman and buildah with overlay storage need root"
        build, pull, podman = container_tools()
        mark = f"events-yaml-{os.getpid()}-{time.time_ns()}"
        with open(os.path.join(WORK, "mark.txt"), "w") as f:
            f.write(mark + "\n")
        c = run_tool(build + ["from", "scratch"])
        run_tool(build + ["copy", c, "/bin/busybox", "/bin/busybox"])
        run_tool(build + ["copy", c, os.path.join(WORK, "mark.txt"), "/mark.txt"])
        run_tool(build + ["config", "--entrypoint", '["/bin/busybox"]', "--cmd", '["cat","/mark.txt"]', c])
        run_tool(build + ["commit", "-q", "--rm", c, "localhost/events/img:latest"])
        reg_host = f"127.0.0.1:{port}"
        df = os.path.join(WORK, "buildah.digest")
        run_tool(build + ["push", "-q", "--tls-verify=false", "--digestfile", df,
                          "localhost/events/img:latest", f"docker://{reg_host}/clients/buildah:v1"])
        buildah_digest = open(df).read().strip()
        # podman pulls what buildah pushed, and pushes it under another name
        run_tool(podman + ["pull", "-q", "--tls-verify=false", f"{reg_host}/clients/buildah:v1"])
        got = run_tool(podman + ["image", "inspect", "--format", "{{.Digest}}", f"{reg_host}/clients/buildah:v1"])
        assert got == buildah_digest, f"podman pulled {got}, buildah pushed {buildah_digest}"
        df = os.path.join(WORK, "podman.digest")
        run_tool(podman + ["push", "-q", "--tls-verify=false", "--digestfile", df,
                           f"{reg_host}/clients/buildah:v1", f"docker://{reg_host}/clients/podman:v1"])
        podman_digest = open(df).read().strip()
        # buildah pulls what podman pushed into a fresh store, and the file inside is the marker
        run_tool(pull + ["pull", "-q", "--tls-verify=false", f"{reg_host}/clients/podman:v1"])
        c = run_tool(pull + ["from", "-q", "--pull-never", f"{reg_host}/clients/podman:v1"])
        root = run_tool(pull + ["mount", c])
        content = open(os.path.join(root, "mark.txt")).read().strip()
        run_tool(pull + ["umount", c])
        run_tool(pull + ["rm", c])
        assert content == mark, f"pulled /mark.txt holds {content!r}"
        want = {("clients/buildah", buildah_digest), ("clients/podman", podman_digest)}
        got = lambda: {(e["target"]["repository"], e["target"]["digest"]) for e in manifest_events(rcv)
                       if e["action"] == "push" and e["target"].get("tag") == "v1"}
        wait_for(lambda: want <= got(), 30, f"push events for {want}")

    def multiarch_push_tag_move_delete_give_exact_events():
        layout = os.path.join(WORK, "layout")
        make_multiarch_layout(layout)
        skopeo("copy", "--all", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://127.0.0.1:{port}/team/app:v1")
        # skopeo may recompress layers, which changes the digests: read what was stored.
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/team/app/manifests/v1")
        req.add_header("Accept", "application/vnd.oci.image.index.v1+json")
        raw = OPENER.open(req, timeout=10).read()
        idx = "sha256:" + hashlib.sha256(raw).hexdigest()
        children = [m["digest"] for m in json.loads(raw)["manifests"]]
        assert len(children) == 2, raw
        out = os.path.join(WORK, "pulled")
        skopeo("copy", "--all", "--src-tls-verify=false", f"docker://127.0.0.1:{port}/team/app:v1", f"oci:{out}:v1")
        # tag move: v1 now names the amd64 manifest
        st, _, body = http_req(port, "GET", f"/v2/team/app/manifests/{children[0]}")
        assert st == 200, f"get child manifest {st}"
        st, _, _ = http_req(port, "PUT", "/v2/team/app/manifests/v1", body, MT)
        assert st == 201, f"tag move {st}"
        st, _, _ = http_req(port, "DELETE", f"/v2/team/app/manifests/{idx}")
        assert st == 202, f"delete {st}"
        want = {("push", children[0], None), ("push", children[1], None), ("push", idx, "v1"),
                ("push", children[0], "v1"), ("delete", idx, None)}
        got = lambda: {(e["action"], e["target"].get("digest"), e["target"].get("tag")) for e in manifest_events(rcv, "team/app")}
        wait_for(lambda: want <= got(), 30, f"events {want}")
        time.sleep(1.5)
        evs = manifest_events(rcv, "team/app")
        assert got() == want, f"unexpected events: {got() - want}"
        assert len(evs) == len(want), f"{len(evs)} distinct events for {len(want)} changes"
        ids = [e["id"] for e in rcv.events() if e["target"]["repository"] == "team/app"]
        dup = len(ids) - len(set(ids))
        for ctype, b in rcv.bodies:
            assert ctype == "application/vnd.docker.distribution.events.v1+json", ctype
        assert rcv.headers and all(h == "Bearer events-test" for h in rcv.headers), "endpoint header missing"
        e = next(e for e in evs if e["target"].get("tag") == "v1" and e["target"]["digest"] == idx)
        for k in ("id", "timestamp", "action", "target", "request", "actor", "source"):
            assert k in e, f"event lacks {k}: {e}"
        t = e["target"]
        assert t["mediaType"] == "application/vnd.oci.image.index.v1+json" and t["size"] == t["length"] > 0, t
        assert t["url"].endswith(f"/v2/team/app/manifests/{idx}"), t["url"]
        assert not any(x["target"].get("mediaType") == "application/octet-stream" for x in rcv.events()), "ignoredmediatypes not honoured"
        state["dups"] = dup

    def receiver_down_then_up_loses_nothing():
        rcv.down()
        pushed = [push_image(port, "down/app", f"t{i}", f"down{i}")[0] for i in range(5)]
        time.sleep(3)
        rcv.up()
        wait_for(lambda: {e["target"]["digest"] for e in manifest_events(rcv, "down/app")} >= set(pushed), 30, "events pushed while the receiver was down")

    def sigkill_with_events_pending_then_restart():
        rcv.down()
        pushed = [push_image(port, "kill/app", f"t{i}", f"kill{i}")[0] for i in range(5)]
        reg.stop(signal.SIGKILL)
        rcv.up()
        reg.start(port)
        wait_for(lambda: {e["target"]["digest"] for e in manifest_events(rcv, "kill/app")} >= set(pushed), 60, "events pending at SIGKILL")

    case("distribution 2.8 config.yml (filesystem, headers, notifications, log fields on every line, health) runs unchanged", distribution_config_runs_unchanged)
    case("multi-arch push (skopeo), pull, tag move and delete: exactly the expected events, Distribution format", multiarch_push_tag_move_delete_give_exact_events)
    case("buildah and podman push and pull against the Distribution config.yml; their pushes give events", podman_and_buildah_push_and_pull)
    def garbage_collect_and_refusals():
        r = subprocess.run([BIN, "garbage-collect", cfg, "--delete-untagged", "--dry-run"], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"garbage-collect exited {r.returncode}: {r.stderr[-400:]}"
        for scheme in ("token", "silly"):
            bad = write("auth.yml", f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: /nonexistent\nauth:\n  {scheme}:\n    realm: r\n")
            r = subprocess.run([BIN, "serve", bad], capture_output=True, text=True, timeout=30)
            assert r.returncode != 0 and f"auth.{scheme}" in r.stderr, f"auth.{scheme} not refused: {r.returncode} {r.stderr[-300:]}"
        ro = write("ro.yml", dist_yaml(free_port(), free_port(), os.path.join(WORK, "fs"), rcv).replace("  delete:\n    enabled: true\n", "  maintenance:\n    readonly:\n      enabled: true\n"))
        rp = int(open(ro).read().split("addr: 127.0.0.1:")[1].split()[0])
        rr = Registry(["serve", ro], "readonly").start(rp)
        st, _, _ = http_req(rp, "POST", "/v2/team/x/blobs/uploads/")
        rr.stop()
        assert st == 405, f"read-only registry answered {st} to an upload"

    case("registry garbage-collect CONFIG runs; auth.token and auth.silly refused; read-only honoured", garbage_collect_and_refusals)
    case("receiver down for a while, then up: every event arrives", receiver_down_then_up_loses_nothing)
    case("registry SIGKILLed with events pending, restarted: every event arrives", sigkill_with_events_pending_then_restart)
    reg.stop()

    # ---- S3, two replicas on one bucket
    moto_port = free_port()
    moto = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(moto_port)],
                            stdout=open(os.path.join(WORK, "moto.log"), "ab"), stderr=subprocess.STDOUT)
    PROCS.append(moto)
    rcv2 = Receiver()
    rcv2.up()

    def s3_two_replicas_deliver_each_event():
        wait_for(lambda: _up(moto_port), 30, "moto_server")
        req = urllib.request.Request(f"http://127.0.0.1:{moto_port}/events-bucket", method="PUT")
        OPENER.open(req, timeout=10).read()
        s3 = f"""  s3:
    bucket: events-bucket
    region: us-east-1
    regionendpoint: http://127.0.0.1:{moto_port}
    accesskey: test
    secretkey: test
    secure: false
    forcepathstyle: true
    rootdirectory: /reg"""
        ports = [free_port(), free_port()]
        regs = []
        for i, p in enumerate(ports):
            c = write(f"s3-{i}.yml", dist_yaml(p, free_port(), "", rcv2, s3, formatter=["text", "json"][i]))
            regs.append(Registry(["serve", c], f"s3-{i}").start(p))
        state["s3regs"] = regs
        pushed = [push_image(ports[i % 2], "s3/app", f"t{i}", f"s3-{i}")[0] for i in range(10)]
        skopeo("copy", "--src-tls-verify=false", f"docker://127.0.0.1:{ports[1]}/s3/app:t0", f"oci:{os.path.join(WORK, 's3pull')}:t0")
        # a real client's multi-arch push to one replica, pulled whole from the other
        push_layout(ports[0], "s3/clients")
        pushed_index = raw_digest(ports[0], "s3/clients:v1")
        assert raw_digest(ports[1], "s3/clients:v1") == pushed_index, "the replicas disagree on s3/clients:v1"
        skopeo("copy", "--all", "--src-tls-verify=false", f"docker://127.0.0.1:{ports[1]}/s3/clients:v1",
               f"oci:{os.path.join(WORK, 's3-clients-pull')}:v1")
        wait_for(lambda: pushed_index in {e["target"]["digest"] for e in manifest_events(rcv2, "s3/clients")}, 60,
                 "the event of the skopeo push")
        wait_for(lambda: {e["target"]["digest"] for e in manifest_events(rcv2, "s3/app")} >= set(pushed), 60, "events from both replicas")
        time.sleep(2)
        assert len(manifest_events(rcv2, "s3/app")) == 10, f"{len(manifest_events(rcv2, 's3/app'))} distinct events for 10 pushes"
        for r in regs:
            r.stop()
        lines = [json.loads(l) for l in check_log_fields("s3-1", "json")]
        assert any(v.get("target") == "registry::access" for v in lines), "no JSON access-log line"
        assert any(v.get("fields", {}).get("message") == "registry serving" for v in lines), "no JSON start-up line"

    case("S3 config.yml, two replicas on one bucket: each event delivered, skopeo pushes and pulls across them; log.fields on every JSON line", s3_two_replicas_deliver_each_event)

    # ---- hanging receiver and the outbox limit (project TOML)
    hang = Receiver()
    hang.mode = "hang"
    hang.up()

    def hanging_receiver_does_not_slow_pushes_and_limit_is_counted():
        p = free_port()
        toml = write("hang.toml", f"""listen = "127.0.0.1:{p}"
storage = "{os.path.join(WORK, 'hang')}"
[events]
max_events = 10
[[events.endpoints]]
name = "hang"
url = "{hang.url()}"
timeout = "60s"
""")
        base = Registry(["serve", "--config", toml], "hang-baseline-off")
        r = Registry(["serve", "--config", toml], "hang").start(p)
        times = []
        for i in range(30):
            t0 = time.time()
            push_image(p, "hang/app", f"t{i}", f"hang{i}")
            times.append(time.time() - t0)
        worst = max(times)
        log(f"  pushes with a hanging receiver: median {sorted(times)[15]*1000:.0f} ms, worst {worst*1000:.0f} ms")
        assert worst < 10, f"a push took {worst:.1f}s while the receiver hung"

        def dropped():
            _, _, b = http_get(p, "/metrics")
            for line in b.decode().splitlines():
                if line.startswith('registry_events_dropped_total{reason="max_events"}'):
                    return float(line.split()[-1])
            return 0.0
        wait_for(lambda: dropped() > 0, 20, "max_events drops counted in /metrics")
        count = lambda: len(os.listdir(os.path.join(WORK, "hang", "outbox", "events")))
        wait_for(lambda: count() <= 10, 20, f"the outbox to shrink to max_events=10 (holds {count()})")
        logtext = open(os.path.join(WORK, "hang.log"), errors="replace").read()
        assert "outbox full" in logtext, "limit not logged"
        del base
        r.stop()

    case("hanging receiver: pushes stay fast, outbox limit enforced and counted", hanging_receiver_does_not_slow_pushes_and_limit_is_counted)

    # ---- access control: the caller is the events' actor and the access log's identity
    rcv3 = Receiver()
    rcv3.up()

    def authenticated_push_names_the_actor():
        p, password, users = new_user("actor.htpasswd", "alice")
        toml = write("actor.toml", f"""listen = "127.0.0.1:{p}"
storage = "{os.path.join(WORK, 'actor')}"
[auth]
htpasswd = "{users}"
[[events.endpoints]]
name = "receiver"
url = "{rcv3.url()}"
""")
        r = Registry(["serve", "--config", toml], "actor").start(p)
        push_layout(p, "team/actor", f"alice:{password}")
        skopeo("copy", "--all", "--src-tls-verify=false", f"docker://127.0.0.1:{p}/team/actor:v1", f"oci:{os.path.join(WORK, 'actor-pulled')}:v1")
        wait_for(lambda: len(manifest_events(rcv3, "team/actor")) >= 3, 30, "the push's manifest events")
        evs = [e for e in rcv3.unique() if e["target"]["repository"] == "team/actor"]
        blobs = [e for e in evs if e["target"].get("mediaType") == "application/octet-stream"]
        assert blobs, "no blob push events"
        names = {e["actor"].get("name") for e in evs}
        assert names == {"alice"}, f"actor names {names} in {len(evs)} events, want only alice"
        lines = access_lines("actor", "team/actor")
        puts = [l for l in lines if "method=PUT" in l and 'endpoint="put_manifest"' in l]
        gets = [l for l in lines if "method=GET" in l and 'endpoint="get_manifest"' in l and "status=200" in l]
        assert puts and all('identity="alice"' in l for l in puts), f"manifest PUT lines: {puts}"
        assert gets and all('identity="anonymous"' in l for l in gets), f"anonymous GET lines: {gets}"
        assert password not in log_text("actor"), "the password appears in the log"
        r.stop()

    case("[auth] + events: a push with credentials has the user as every event's actor and the access log's identity", authenticated_push_names_the_actor)

    # ---- Distribution's auth.htpasswd: a login for every request (events to rcv3 as well)
    def distribution_htpasswd_needs_a_login():
        p, password, users = new_user("dist.htpasswd", "bob")
        cfg_text = dist_yaml(p, free_port(), os.path.join(WORK, "htpasswd-fs"), rcv3)
        cfg_text += f"auth:\n  htpasswd:\n    realm: basic-realm\n    path: {users}\n"
        r = Registry(["serve", write("htpasswd.yml", cfg_text)], "htpasswd").start(p)
        st, h, _ = http_get(p, "/v2/")
        assert st == 401 and h.get("WWW-Authenticate"), f"anonymous /v2/: {st} {h.get('WWW-Authenticate')}"
        dest = f"docker://127.0.0.1:{p}/team/locked:v1"
        layout = os.path.join(WORK, "htpasswd-layout")
        make_multiarch_layout(layout)
        for creds in ([], ["--dest-creds", "bob:wrong"]):
            assert skopeo_fails("copy", "--all", "--dest-tls-verify=false", *creds, f"oci:{layout}:v1", dest), f"push with {creds} succeeded"
        skopeo("copy", "--all", "--dest-tls-verify=false", "--dest-creds", f"bob:{password}", f"oci:{layout}:v1", dest)
        st, _, _ = http_get(p, "/v2/team/locked/manifests/v1")
        assert st == 401, f"anonymous manifest GET answered {st}"
        out = f"oci:{os.path.join(WORK, 'htpasswd-pulled')}:v1"
        assert skopeo_fails("copy", "--src-tls-verify=false", dest, out), "anonymous skopeo pull succeeded"
        skopeo("copy", "--all", "--src-tls-verify=false", "--src-creds", f"bob:{password}", dest, out)
        basic = {"Authorization": "Basic " + base64.b64encode(f"bob:{password}".encode()).decode(),
                 "Accept": "application/vnd.oci.image.index.v1+json"}
        st, h, _ = http_req(p, "HEAD", "/v2/team/locked/manifests/v1", headers=basic)
        assert st == 200, f"HEAD with Basic credentials: {st}"
        st, _, _ = http_req(p, "DELETE", f"/v2/team/locked/manifests/{h['Docker-Content-Digest']}", headers=basic)
        assert st == 202, f"DELETE with Basic credentials (storage.delete.enabled): {st}"
        wait_for(lambda: {e["action"] for e in manifest_events(rcv3, "team/locked")} == {"push", "delete"}, 30, "push and delete events")
        names = {e["actor"].get("name") for e in manifest_events(rcv3, "team/locked")}
        assert names == {"bob"}, f"actor names {names}"
        lines = access_lines("htpasswd", "team/locked")
        assert any('identity="bob"' in l and "method=PUT" in l for l in lines), "no access-log line names bob"
        assert any("status=401" in l and "method=GET" in l for l in lines), "the refused anonymous GET is not in the access log"
        assert password not in log_text("htpasswd"), "the password is in the log"
        r.stop()

    case("Distribution auth.htpasswd: anonymous pull and push 401, skopeo logs in to push and pull, delete, actor is the user", distribution_htpasswd_needs_a_login)

    # ---- Distribution's proxy.remoteurl: the whole registry mirrors one upstream
    def distribution_proxy_pulls_through():
        assert shutil.which("docker-registry"), "docker-registry (CNCF Distribution) missing: scripts/install-test-deps.sh installs it"
        up_port, p = free_port(), free_port()
        users = htpasswd_file("upstream.htpasswd", "puller", "up-s3cret")
        up_cfg = write("upstream.yml", f"""version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: {os.path.join(WORK, 'upstream')}
http:
  addr: 127.0.0.1:{up_port}
auth:
  htpasswd:
    realm: upstream
    path: {users}
""")
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}
        up = subprocess.Popen(["docker-registry", "serve", up_cfg], stdout=open(os.path.join(WORK, "upstream.log"), "ab"),
                              stderr=subprocess.STDOUT, env=env)
        PROCS.append(up)
        wait_for(lambda: _up(up_port), 30, "the upstream Distribution")
        layout = push_layout(up_port, "team/mirrored", "puller:up-s3cret")
        cfg_text = dist_yaml(p, free_port(), os.path.join(WORK, "proxy-fs"), rcv)
        cfg_text += f"proxy:\n  remoteurl: http://127.0.0.1:{up_port}\n  username: puller\n  password: up-s3cret\n  ttl: 168h\n"
        r = Registry(["serve", write("proxy.yml", cfg_text)], "proxy").start(p)
        # Every name comes from the upstream, with no prefix and no ?ns=.
        out = os.path.join(WORK, "proxy-pulled")
        skopeo("copy", "--all", "--src-tls-verify=false", f"docker://127.0.0.1:{p}/team/mirrored:v1", f"oci:{out}:v1")
        mirrored = raw_digest(p, "team/mirrored:v1")
        assert mirrored == raw_digest(up_port, "team/mirrored:v1", "puller:up-s3cret"), "the mirror serves another digest than the upstream"
        st, _, _ = http_get(p, "/v2/team/absent/manifests/v1")
        assert st == 404, f"a name the upstream lacks: {st}"
        assert skopeo_fails("copy", "--dest-tls-verify=false", f"oci:{layout}:v1", f"docker://127.0.0.1:{p}/team/pushed:v1"), "a push into the mirror succeeded"
        st, _, _ = http_req(p, "POST", "/v2/team/pushed/blobs/uploads/")
        assert st == 403, f"upload start on the mirror answered {st}, want 403 DENIED"
        # Cached: the upstream going away does not stop pulls of what was pulled.
        up.terminate()
        up.wait(20)
        skopeo("copy", "--all", "--src-tls-verify=false", f"docker://127.0.0.1:{p}/team/mirrored@{mirrored}", f"oci:{out}2:v1")
        text = log_text("proxy")
        assert "proxy.ttl" in text and "pull-through cache of" in text, "no start-up note on proxy.remoteurl and proxy.ttl"
        assert "up-s3cret" not in text, "the upstream password is in the log"
        r.stop()

    case("Distribution proxy.remoteurl with credentials: skopeo pulls any name through a real Distribution upstream, pushes refused", distribution_proxy_pulls_through)
    log(f"{RESULTS['pass']} passed, {RESULTS['fail']} failed")
    return 1 if RESULTS["fail"] else 0


def _up(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def cleanup():
    for p in PROCS:
        if p.poll() is None:
            p.kill()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
    if os.path.isdir(os.path.join(WORK, "podman")):
        subprocess.run(container_tools()[2] + ["rmi", "-af"], capture_output=True, timeout=60)
    for store in container_tools()[:2]:
        if os.path.isdir(store[2]):
            subprocess.run(store + ["rm", "-a"], capture_output=True, timeout=60)
    umount_under(WORK)
    if os.environ.get("EVENTS_KEEP"):
        log(f"logs kept in {WORK}")
    else:
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    try:
        rc = main()
    finally:
        cleanup()
    sys.exit(rc)
