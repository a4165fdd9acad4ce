#!/usr/bin/env python3
"""Renders the kustomize bases under deploy/, validates every object offline against the
Kubernetes API schemas, checks what each base promises, and extracts the files the other tests
run (the node-setup script, the registry config, the TLS settings) from the rendered output, so
those tests exercise the deployed bytes.

  manifests.py render BASE OUT_DIR       kustomize BASE -> OUT_DIR/BASE.yaml; schema-validate it
  manifests.py check BASE OUT_DIR        the base's own promises (non-root, probes, RBAC, ...)
  manifests.py extract OUT_DIR           files for the runtime tests, into OUT_DIR/extracted/
  manifests.py kontrakt OUT_DIR          kustomize deploy/kontrakt (no schema validation) and
                                         extract the BuildKit Job's push credentials step only

Environment: KUBECTL (kubectl or kustomize command; default kubectl), K8S_VERSIONS (schema
versions, comma separated; default 1.30.0,1.37.0), EXPECTED_IMAGE (image the Deployment names).
Exits 0 when everything holds; otherwise prints the reasons on stdout and exits 1.
"""

import json
import os
import shlex
import subprocess
import sys
import tomllib

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.dirname(HERE)
SERVICE_NAME = "builds.registry.svc.cluster.local"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                  "PersistentVolume", "StorageClass", "PriorityClass"}


class Failed(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise Failed(msg)


# ------------------------------------------------------------------ rendering
def kustomize(base):
    cmd = shlex.split(os.environ.get("KUBECTL", "kubectl"))
    if os.path.basename(cmd[0]) == "kustomize":
        cmd += ["build", os.path.join(DEPLOY, base)]
    else:
        cmd += ["kustomize", os.path.join(DEPLOY, base)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    need(p.returncode == 0, f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()[:600]}")
    return p.stdout


def load(out_dir, base):
    with open(os.path.join(out_dir, base.replace("/", "_") + ".yaml")) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def render(base, out_dir):
    import kubernetes_validate

    text = kustomize(base)
    docs = [d for d in yaml.safe_load_all(text) if d]
    need(docs, "rendered no objects")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, base.replace("/", "_") + ".yaml"), "w") as f:
        f.write(text)
    versions = os.environ.get("K8S_VERSIONS", "1.30.0,1.37.0").split(",")
    errors = []
    for d in docs:
        ident = f"{d.get('kind')}/{d.get('metadata', {}).get('name')}"
        if d.get("kind") not in CLUSTER_SCOPED and not d.get("metadata", {}).get("namespace"):
            errors.append(f"{ident}: no namespace")
        for v in versions:
            try:
                kubernetes_validate.validate(d, v, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{ident} against {v}: {path}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError as e:
                errors.append(f"{ident} against {v}: no schema ({e})")
    need(not errors, "; ".join(errors[:6]))
    kinds = sorted({d["kind"] for d in docs})
    print(f"{len(docs)} objects ({', '.join(kinds)}) valid against Kubernetes {', '.join(versions)}")


# ------------------------------------------------------------------ helpers for checks
def one(docs, kind, name=None, namespace=None):
    found = [d for d in docs if d["kind"] == kind
             and (name is None or d["metadata"]["name"] == name)
             and (namespace is None or d["metadata"].get("namespace") == namespace)]
    need(len(found) == 1, f"expected one {kind} {name or ''} in {namespace or 'any namespace'}, found {len(found)}")
    return found[0]


def container(pod_spec, name, init=False):
    lst = pod_spec.get("initContainers" if init else "containers", [])
    found = [c for c in lst if c["name"] == name]
    need(found, f"no {'init ' if init else ''}container {name}")
    return found[0]


def env_of(c):
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def volume(pod_spec, name):
    found = [v for v in pod_spec.get("volumes", []) if v["name"] == name]
    need(found, f"no volume {name}")
    return found[0]


def mount_for(c, path):
    """The volumeMount whose mountPath contains path (longest match)."""
    best = None
    for m in c.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"]):
                best = m
    need(best is not None, f"nothing mounted at {path}")
    return best


def container_port(c, port):
    """containerPort for a Service targetPort (number or name)."""
    for p in c.get("ports", []):
        if p.get("name") == port or p["containerPort"] == port:
            return p["containerPort"]
    raise Failed(f"container {c['name']} has no port {port}")


def registry_config(docs, dep):
    """The registry.toml the Deployment mounts (through REGISTRY_CONFIG), parsed."""
    spec = dep["spec"]["template"]["spec"]
    c = container(spec, "registry")
    path = env_of(c).get("REGISTRY_CONFIG")
    need(path, "REGISTRY_CONFIG not set")
    m = mount_for(c, path)
    v = volume(spec, m["name"])
    need("configMap" in v, f"{path} is not on a ConfigMap volume")
    cm = one(docs, "ConfigMap", v["configMap"]["name"], dep["metadata"]["namespace"])
    key = os.path.relpath(path, m["mountPath"])
    need(key in cm["data"], f"ConfigMap {cm['metadata']['name']} has no key {key}")
    return tomllib.loads(cm["data"][key]), cm["data"][key]


def check_security(c, spec, what):
    psc = spec.get("securityContext", {})
    csc = c.get("securityContext", {})
    need(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{what}: runAsNonRoot is not true")
    need((csc.get("runAsUser", psc.get("runAsUser")) or 0) != 0, f"{what}: runs as uid 0")
    need(csc.get("readOnlyRootFilesystem") is True, f"{what}: readOnlyRootFilesystem is not true")
    need(csc.get("allowPrivilegeEscalation") is False, f"{what}: allowPrivilegeEscalation is not false")
    need("ALL" in csc.get("capabilities", {}).get("drop", []), f"{what}: capabilities not dropped")


def check_resources(c, what):
    r = c.get("resources", {})
    for k in ("requests", "limits"):
        for res in ("cpu", "memory"):
            need(res in r.get(k, {}), f"{what}: no {k}.{res}")


# ------------------------------------------------------------------ checks per base
def check_registry_deployment(docs):
    dep = one(docs, "Deployment", "registry", "registry")
    spec = dep["spec"]["template"]["spec"]
    c = container(spec, "registry")
    check_security(c, spec, "registry container")
    check_resources(c, "registry container")
    expected = os.environ.get("EXPECTED_IMAGE")
    if expected:
        need(c["image"] == expected, f"image {c['image']}, expected {expected} (deploy/image/build.sh)")
    need(c.get("args", [None])[0] == "serve", "registry container does not run `serve`")
    cfg, _ = registry_config(docs, dep)
    for key in ("listen", "storage", "fsync", "auto_mount", "max_manifest_size", "log_format",
                "log_level", "shutdown_timeout"):
        need(key in cfg, f"registry.toml lacks {key}")
    listen_port = int(cfg["listen"].rsplit(":", 1)[1])
    http_port = container_port(c, "http")
    need(http_port == listen_port, f"containerPort http {http_port} != listen port {listen_port}")
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        p = c.get(probe, {}).get("httpGet", {})
        need(p.get("path") == path, f"{probe} path {p.get('path')}, expected {path}")
        need(container_port(c, p.get("port")) == listen_port, f"{probe} port is not the listen port")
    grace = spec.get("terminationGracePeriodSeconds", 30)
    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    storage = cfg["storage"]
    env = env_of(c)
    need(grace > int(env.get("REGISTRY_SHUTDOWN_TIMEOUT", cfg["shutdown_timeout"])) + pre_stop,
         f"terminationGracePeriodSeconds {grace} <= shutdown_timeout {cfg['shutdown_timeout']} + preStop {pre_stop}")
    storage = env.get("REGISTRY_STORAGE", storage)
    if "://" not in storage:
        m = mount_for(c, storage)
        need(not m.get("readOnly"), f"storage {storage} is mounted read-only")
    ann = dep["spec"]["template"]["metadata"].get("annotations", {})
    need(ann.get("prometheus.io/scrape") == "true", "no prometheus.io/scrape annotation")
    need(int(ann.get("prometheus.io/port", 0)) == listen_port, "prometheus.io/port is not the listen port")
    need(ann.get("prometheus.io/path") == "/metrics", "prometheus.io/path is not /metrics")
    # the Service selects these pods and maps port 80 to the registry
    svc = one(docs, "Service", "builds", "registry")
    labels = dep["spec"]["template"]["metadata"]["labels"]
    need(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()),
         "Service builds does not select the registry pods")
    p80 = [p for p in svc["spec"]["ports"] if p["port"] == 80]
    need(p80 and container_port(c, p80[0]["targetPort"]) == listen_port,
         "Service builds port 80 does not reach the listen port")
    one(docs, "Namespace", "registry")
    return dep, spec, c, cfg, storage


RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}


def pod_specs(docs, namespace):
    """(what, pod spec) of every workload in namespace."""
    out = []
    for d in docs:
        if d["metadata"].get("namespace") != namespace:
            continue
        what = f"{d['kind']}/{d['metadata']['name']}"
        spec = d.get("spec", {})
        if d["kind"] == "CronJob":
            out.append((what, spec["jobTemplate"]["spec"]["template"]["spec"]))
        elif d["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
            out.append((what, spec["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((what, spec))
    return out


def check_restricted(spec, what):
    """The Pod Security Standard `restricted` (the checks admission makes), for one pod spec."""
    for k in ("hostNetwork", "hostPID", "hostIPC"):
        need(not spec.get(k), f"{what}: {k}")
    for v in spec.get("volumes", []):
        kinds = set(v) - {"name"}
        need(kinds <= RESTRICTED_VOLUMES, f"{what}: volume {v['name']} is {sorted(kinds)}")
    psc = spec.get("securityContext", {})
    need(psc.get("seccompProfile", {}).get("type", "RuntimeDefault") in ("RuntimeDefault", "Localhost"),
         f"{what}: pod seccomp profile")
    need(psc.get("runAsUser", 1) != 0, f"{what}: pod runs as uid 0")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        cw = f"{what} container {c['name']}"
        csc = c.get("securityContext", {})
        need(not csc.get("privileged"), f"{cw}: privileged")
        need(csc.get("allowPrivilegeEscalation") is False, f"{cw}: allowPrivilegeEscalation is not false")
        caps = csc.get("capabilities", {})
        need("ALL" in caps.get("drop", []), f"{cw}: capabilities not dropped")
        need(set(caps.get("add", [])) <= {"NET_BIND_SERVICE"}, f"{cw}: adds {caps.get('add')}")
        need(csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, f"{cw}: runAsNonRoot is not true")
        need(csc.get("runAsUser", psc.get("runAsUser", 1)) != 0, f"{cw}: runs as uid 0")
        sp = csc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        need(sp in ("RuntimeDefault", "Localhost"), f"{cw}: seccomp profile {sp}, not RuntimeDefault")
        need(not [p for p in c.get("ports", []) if p.get("hostPort")], f"{cw}: hostPort")


def check_registry_namespace_restricted(docs):
    """Every pod this base puts in namespace registry passes `restricted`."""
    specs = pod_specs(docs, "registry")
    for what, spec in specs:
        check_restricted(spec, what)
    return specs


def check_pod_security(docs):
    labels = one(docs, "Namespace", "registry")["metadata"].get("labels", {})
    # the registry's pods only: the node DaemonSets have their own namespace (registry-nodes)
    for mode in ("enforce", "warn", "audit"):
        need(labels.get(f"pod-security.kubernetes.io/{mode}") == "restricted", f"Pod Security {mode} label")
    need(check_registry_namespace_restricted(docs), "no pod in namespace registry")


def check_generic_scratch(docs):
    dep, spec, c, cfg, storage = check_registry_deployment(docs)
    m = mount_for(c, storage)
    need("emptyDir" in volume(spec, m["name"]), f"storage {storage} is not on an emptyDir")
    check_pod_security(docs)
    lrh = one(docs, "ConfigMap", "local-registry-hosting", "kube-public")
    v1 = yaml.safe_load(lrh["data"]["localRegistryHosting.v1"])
    need(v1.get("hostFromClusterNetwork") == SERVICE_NAME, "KEP-1755 hostFromClusterNetwork")
    need(v1.get("hostFromContainerRuntime") == SERVICE_NAME, "KEP-1755 hostFromContainerRuntime")
    need(v1.get("host"), "KEP-1755 host missing")


def check_generic(docs):
    # the default keeps images across config changes and rollouts: a PVC
    check_pod_security(docs)
    dep, spec, c, cfg, storage = check_registry_deployment(docs)
    v = volume(spec, mount_for(c, storage)["name"])
    need("persistentVolumeClaim" in v and "emptyDir" not in v, "storage is not (only) a PVC")
    one(docs, "PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"], "registry")
    need(dep["spec"].get("strategy", {}).get("type") == "Recreate", "a RWO volume needs strategy Recreate")


def check_generic_tls(docs):
    check_pod_security(docs)
    dep, spec, c, cfg, storage = check_registry_deployment(docs)
    env = env_of(c)
    for k in ("REGISTRY_TLS_CERT", "REGISTRY_TLS_KEY", "REGISTRY_TLS_LISTEN"):
        need(env.get(k), f"{k} not set")
    for k in ("REGISTRY_TLS_CERT", "REGISTRY_TLS_KEY"):
        v = volume(spec, mount_for(c, env[k])["name"])
        need(v.get("secret", {}).get("secretName") == "builds-tls", f"{k} is not from Secret builds-tls")
    tls_port = int(env["REGISTRY_TLS_LISTEN"].rsplit(":", 1)[1])
    svc = one(docs, "Service", "builds", "registry")
    p443 = [p for p in svc["spec"]["ports"] if p["port"] == 443]
    need(p443 and container_port(c, p443[0]["targetPort"]) == tls_port, "Service port 443 does not reach TLS")
    job = one(docs, "Job", "builds-tls", "registry")
    jspec = job["spec"]["template"]["spec"]
    cert = container(jspec, "cert", init=True)
    need(cert["image"] == c["image"], "the cert Job does not use the registry image")
    need(cert["args"][0] == "cert", "the cert init container does not run `registry cert`")
    need(SERVICE_NAME in cert["args"], f"the certificate does not name {SERVICE_NAME}")
    need("$(BUILDS_SERVICE_HOST)" in cert["args"], "the certificate does not name the ClusterIP")
    need(jspec.get("enableServiceLinks", True), "BUILDS_SERVICE_HOST needs enableServiceLinks")
    sa = jspec["serviceAccountName"]
    one(docs, "ServiceAccount", sa, "registry")
    rb = [d for d in docs if d["kind"] == "RoleBinding"
          and any(s["kind"] == "ServiceAccount" and s["name"] == sa for s in d["subjects"])]
    need(len(rb) == 1, f"expected one RoleBinding for {sa}")
    need(rb[0]["roleRef"]["kind"] == "Role", "the Job's binding is not to a namespaced Role")
    role = one(docs, "Role", rb[0]["roleRef"]["name"], "registry")
    for rule in role["rules"]:
        need(rule["apiGroups"] == [""] and rule["resources"] == ["secrets"], f"rule beyond secrets: {rule}")
        need(set(rule["verbs"]) <= {"get", "create"}, f"verbs beyond get/create: {rule['verbs']}")
        if "get" in rule["verbs"]:
            need(rule.get("resourceNames") == ["builds-tls"], "get is not limited to builds-tls")
    need(not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")], "cluster-wide RBAC")
    need(not [d for d in docs if "certificates.k8s.io" in json.dumps(d)], "uses the CSR API")
    # no other workload may mount the service account token
    need(spec.get("automountServiceAccountToken") is False, "the registry pod mounts an API token")


def check_s3(docs):
    check_pod_security(docs)
    dep, spec, c, cfg, storage = check_registry_deployment(docs)
    need(dep["spec"]["replicas"] >= 2, "fewer than 2 replicas")
    need(storage.startswith("s3://") and storage.count("/") >= 3, f"storage {storage} is not s3://bucket/prefix")
    refs = [e["secretRef"]["name"] for e in c.get("envFrom", []) if "secretRef" in e]
    refs += [e["valueFrom"]["secretKeyRef"]["name"] for e in c.get("env", [])
             if "secretKeyRef" in e.get("valueFrom", {})]
    need(refs, "no credentials from a Secret")
    need(not any(e["name"].startswith("AWS_SECRET") and "value" in e for e in c.get("env", [])),
         "a secret key in plain env")
    pdb = one(docs, "PodDisruptionBudget", None, "registry")
    need(pdb["spec"].get("minAvailable", 0) >= 1, "PodDisruptionBudget allows zero pods")
    # Garbage collection: off in the replicas, one CronJob for the cluster on the same storage,
    # configuration and credentials.
    need(env_of(c).get("REGISTRY_GC_INTERVAL") == "0", "the replicas collect garbage themselves")
    cj = one(docs, "CronJob", "registry-gc", "registry")
    need(cj["spec"].get("concurrencyPolicy") == "Forbid", "two collections may run at once")
    gspec = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    g = container(gspec, "gc")
    need(g.get("args") == ["gc"], f"the CronJob runs {g.get('args')}, not registry gc")
    need(g["image"] == c["image"], "the CronJob runs another image than the replicas")
    genv = env_of(g)
    need(genv.get("REGISTRY_STORAGE") == storage, "the CronJob collects other storage than the replicas'")
    need(genv.get("REGISTRY_CONFIG") == env_of(c).get("REGISTRY_CONFIG"), "the CronJob reads another config path")
    def config_map(pod, ctr):
        return volume(pod, mount_for(ctr, env_of(ctr)["REGISTRY_CONFIG"])["name"]).get("configMap", {}).get("name")
    need(config_map(gspec, g) == config_map(spec, c), "the CronJob mounts another ConfigMap than the replicas")
    need([e["secretRef"]["name"] for e in g.get("envFrom", []) if "secretRef" in e] == refs[:1],
         "the CronJob has other credentials than the replicas")
    need(gspec.get("automountServiceAccountToken") is False, "the CronJob's pod mounts an API token")
    check_security(g, gspec, "registry-gc")
    check_resources(g, "registry-gc")


NODES_NAMESPACE = "registry-nodes"


def node_setup_daemonset(docs, name, mode="run"):
    ds = one(docs, "DaemonSet", name, NODES_NAMESPACE)
    spec = ds["spec"]["template"]["spec"]
    # their own namespace, `privileged` (hostPath, root), apart from the registry's `restricted` one
    labels = one(docs, "Namespace", NODES_NAMESPACE)["metadata"].get("labels", {})
    need(labels.get("pod-security.kubernetes.io/enforce") == "privileged", f"{NODES_NAMESPACE}: enforce is not privileged")
    need(not [d for d in docs if d["kind"] == "Namespace" and d["metadata"]["name"] == "registry"],
         "a node base owns namespace registry (deleting it would delete the registry)")
    need(not [w for w, _ in pod_specs(docs, NODES_NAMESPACE) if not w.startswith("DaemonSet/")],
         f"pods other than the node DaemonSets in {NODES_NAMESPACE}")
    check_registry_namespace_restricted(docs)
    need({"operator": "Exists"} in spec.get("tolerations", []), "does not tolerate every taint")
    c = container(spec, "setup")
    cmd = c["command"] + c.get("args", [])
    script_path = next(a for a in cmd if a.endswith("setup-node.sh"))
    m = mount_for(c, script_path)
    cm = one(docs, "ConfigMap", volume(spec, m["name"])["configMap"]["name"], NODES_NAMESPACE)
    with open(os.path.join(DEPLOY, "node-containerd", "setup-node.sh")) as f:
        need(cm["data"]["setup-node.sh"] == f.read(),
             "the ConfigMap's setup-node.sh differs from deploy/node-containerd/setup-node.sh")
    need(cmd[-1] == mode, f"the DaemonSet does not run `setup-node.sh {mode}`")
    # a rolling update or an eviction must not remove the files: no preStop hook at all
    need("preStop" not in c.get("lifecycle", {}), "a preStop hook (it would remove hosts.toml on every rollout)")
    need(spec.get("priorityClassName") == "system-node-critical", "priorityClassName is not system-node-critical")
    need(spec.get("securityContext", {}).get("seLinuxOptions", {}).get("type") == "spc_t",
         "no SELinux type spc_t (enforcing rke2 / CRI-O nodes)")
    env = env_of(c)
    need(env.get("VERIFY") == "probe", "VERIFY is not probe: readiness would not prove the pull")
    ready = c.get("readinessProbe", {}).get("exec", {}).get("command", [])
    need(any(env.get("READY_FILE", "-") in a for a in ready), "the readinessProbe does not test READY_FILE")
    # the binary that reads the runtime's effective config, from the registry's own image
    init = container(spec, "node-setup-binary", init=True)
    need(init["command"][-3:] == ["node-setup", "install", env["NODE_SETUP_BIN"]], "the init container does not install NODE_SETUP_BIN")
    need(init["image"].startswith("localhost/registry"), f"the init container runs {init['image']}, not the registry image")
    run = volume(spec, mount_for(c, env["NODE_RUN"] + "/containerd")["name"])
    need(run.get("hostPath", {}).get("path") == "/run", "NODE_RUN is not the node's /run")
    need(mount_for(c, env["NODE_RUN"] + "/containerd").get("readOnly") is True, "the runtime socket is not mounted read-only")
    host = volume(spec, mount_for(c, env["HOST_ROOT"] + "/etc")["name"])
    need(host.get("hostPath", {}).get("path") == "/", "HOST_ROOT is not the node's /")
    need(env.get("REGISTRY_NAME") == SERVICE_NAME, "REGISTRY_NAME")
    need(not spec.get("hostNetwork"), "hostNetwork: the pod would not see cluster DNS")
    # the Service is in another namespace: no BUILDS_SERVICE_HOST here, the address comes from DNS
    need(env.get("ADDRESS_LOOKUP") == "dns", f"ADDRESS_LOOKUP {env.get('ADDRESS_LOOKUP')!r}, not dns")
    need(spec.get("dnsPolicy", "ClusterFirst") == "ClusterFirst", "dnsPolicy is not ClusterFirst: no cluster DNS")
    check_resources(c, "setup container")
    return ds, spec, c, env


def check_node_containerd(docs):
    _, _, _, env = node_setup_daemonset(docs, "registry-node-setup")
    need(env.get("TARGETS") == "containerd", "TARGETS is not containerd")
    need(env.get("REGISTRY_SCHEME") == "http" and env.get("REGISTRY_PORT") == "80", "not http on port 80")
    need(env.get("UPSTREAMS", None) == "", "UPSTREAMS is not there, or not off by default")


def check_node_containerd_cleanup(docs):
    # the uninstall: the same DaemonSet (so applying it replaces the running one) in cleanup mode
    _, _, _, env = node_setup_daemonset(docs, "registry-node-setup", mode="cleanup")
    need(env.get("TARGETS") == "containerd", "TARGETS is not containerd")


def check_node_hosts_cleanup(docs):
    ds, _, _, env = node_setup_daemonset(docs, "registry-node-setup-hosts", mode="cleanup")
    need(env.get("TARGETS") == "hosts", "TARGETS is not hosts")


def check_node_containerd_tls(docs):
    _, spec, c, env = node_setup_daemonset(docs, "registry-node-setup")
    need(env.get("REGISTRY_SCHEME") == "https" and env.get("REGISTRY_PORT") == "443", "not https on 443")
    # the CA: Secret registry/builds-tls, published as a ConfigMap in the DaemonSet's namespace by
    # a CronJob in namespace registry
    v = volume(spec, mount_for(c, env["CA_FILE"])["name"])
    cm_name = v.get("configMap", {}).get("name")
    need(cm_name, "CA_FILE is not from a ConfigMap")
    need([i["path"] for i in v["configMap"].get("items", []) if i["key"] == "ca.crt"] == [os.path.basename(env["CA_FILE"])],
         "ca.crt not projected as CA_FILE")
    cj = one(docs, "CronJob", "builds-ca-publish", "registry")
    pspec = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    p = container(pspec, "publish")
    penv = env_of(p)
    need(penv.get("TARGET_NAMESPACE") == NODES_NAMESPACE and penv.get("CONFIGMAP_NAME") == cm_name,
         "the CronJob publishes elsewhere than the DaemonSet reads")
    src = volume(pspec, mount_for(p, penv["CA_FILE"])["name"]).get("secret", {})
    need(src.get("secretName") == "builds-tls" and [i["key"] for i in src.get("items", [])] == ["ca.crt"],
         "the CronJob does not read only ca.crt of Secret builds-tls")
    script = p["command"][-1]
    sm = mount_for(p, script)
    scm = one(docs, "ConfigMap", volume(pspec, sm["name"])["configMap"]["name"], "registry")
    with open(os.path.join(DEPLOY, "node-containerd-tls", "publish-ca.sh")) as f:
        need(scm["data"].get(os.path.basename(script)) == f.read(), "the CronJob's publish-ca.sh differs from the file")
    role = one(docs, "Role", "builds-ca-publish", NODES_NAMESPACE)
    for rule in role["rules"]:
        need(rule["resources"] == ["configmaps"], f"rule beyond configmaps: {rule}")
        if set(rule["verbs"]) - {"create"}:
            need(rule.get("resourceNames") == [cm_name], f"{rule['verbs']} not limited to {cm_name}")
    need(not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")], "cluster-wide RBAC")


def check_node_hosts(docs):
    ds, _, _, env = node_setup_daemonset(docs, "registry-node-setup-hosts")
    need(env.get("TARGETS") == "hosts", "TARGETS is not hosts")
    need(ds["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/component") == "node-hosts",
         "selector overlaps deploy/node-containerd's")


def kontrakt_push_auth(docs, job):
    """How a kontrakt Job pushes: the docker-config init container (run before the build, the
    script from its ConfigMap), the projected ServiceAccount token it reads, the audience, the
    destination. Checks that it all fits together."""
    name, ns = job["metadata"]["name"], job["metadata"]["namespace"]
    spec = job["spec"]["template"]["spec"]
    inits = [c["name"] for c in spec.get("initContainers", [])]
    need(inits[:1] == ["docker-config"] and "build-push" in inits,
         f"{name}: init containers {inits}: docker-config must run first, then build-push")
    sa = spec.get("serviceAccountName")
    need(sa and sa != "default", f"{name}: runs as no ServiceAccount of its own")
    one(docs, "ServiceAccount", sa, ns)
    need(spec.get("automountServiceAccountToken") is False, f"{name}: mounts the API token")
    cfg = container(spec, "docker-config", init=True)
    env = env_of(cfg)
    token_file = env.get("TOKEN_FILE")
    need(token_file, f"{name}: docker-config has no TOKEN_FILE")
    m = mount_for(cfg, token_file)
    srcs = volume(spec, m["name"]).get("projected", {}).get("sources", [])
    tok = [s["serviceAccountToken"] for s in srcs if "serviceAccountToken" in s]
    need(tok and os.path.join(m["mountPath"], tok[0]["path"]) == token_file,
         f"{name}: TOKEN_FILE {token_file} is not a projected ServiceAccount token")
    audience = tok[0].get("audience")
    need(audience == "registry", f"{name}: token audience {audience!r}, not the registry's 'registry'")
    need(env.get("REGISTRY_NAME") == SERVICE_NAME, f"{name}: docker-config writes credentials for another name")
    script = cfg["command"][-1]
    sm = mount_for(cfg, script)
    cm = one(docs, "ConfigMap", volume(spec, sm["name"])["configMap"]["name"], ns)
    key = os.path.relpath(script, sm["mountPath"])
    with open(os.path.join(DEPLOY, "kontrakt", "docker-config.sh")) as f:
        need(cm["data"].get(key) == f.read(), f"{name}: the ConfigMap's {key} differs from deploy/kontrakt/docker-config.sh")
    build = container(spec, "build-push", init=True)
    dc = env.get("DOCKER_CONFIG")
    need(env_of(build).get("DOCKER_CONFIG") == dc, f"{name}: the builder reads another DOCKER_CONFIG than docker-config writes")
    need(mount_for(build, dc + "/config.json")["name"] == mount_for(cfg, dc + "/config.json")["name"],
         f"{name}: config.json is not on a volume both containers share")
    text = " ".join(build.get("command", []) + build.get("args", []))
    dest = [a for a in text.replace(",", " ").replace("=", " ").split() if a.startswith(SERVICE_NAME + "/")]
    need(dest, f"{name} pushes nowhere under {SERVICE_NAME}")
    need(dest[0].startswith(f"{SERVICE_NAME}/builds/{ns}/"), f"{name} pushes {dest[0]}, outside builds/{ns}/")
    return {"job": name, "namespace": ns, "serviceaccount": sa, "audience": audience,
            "env": env, "script": cm["data"][key], "dest": dest[0], "build": build}


def check_kontrakt(docs):
    jobs = [d for d in docs if d["kind"] == "Job"]
    builders, accounts = set(), set()
    for job in jobs:
        spec = job["spec"]["template"]["spec"]
        auth = kontrakt_push_auth(docs, job)
        accounts.add(auth["serviceaccount"])
        run = spec["containers"][0]
        need(run["image"] == auth["dest"], f"{job['metadata']['name']} runs {run['image']}, not the pushed {auth['dest']}")
        need(run.get("imagePullPolicy") == "Always", "the pushed image must be pulled, not cached")
        if "kaniko" in auth["build"]["image"]:
            builders.add("kaniko")
        if "buildkit" in auth["build"]["image"]:
            builders.add("buildkit")
    need(builders == {"kaniko", "buildkit"}, f"builders {sorted(builders)}, expected kaniko and buildkit")
    need(len(accounts) == len(jobs), "the Jobs share a ServiceAccount")


def extract_kontrakt(out_dir):
    """The BuildKit Job's push credentials step, for deploy/tests/buildkit.sh: its script and
    environment, the token's audience, the Job's namespace and destination."""
    x = os.path.join(out_dir, "extracted")
    os.makedirs(x, exist_ok=True)
    docs = load(out_dir, "kontrakt")
    auth = kontrakt_push_auth(docs, one(docs, "Job", "kontrakt-buildkit"))
    with open(os.path.join(x, "docker-config.sh"), "w") as f:
        f.write(auth.pop("script"))
    auth.pop("build")
    with open(os.path.join(x, "kontrakt-buildkit.json"), "w") as f:
        json.dump(auth, f)


CHECKS = {
    "generic": check_generic,
    "generic-scratch": check_generic_scratch,
    "generic-tls": check_generic_tls,
    "s3": check_s3,
    "node-containerd": check_node_containerd,
    "node-containerd-cleanup": check_node_containerd_cleanup,
    "node-hosts-cleanup": check_node_hosts_cleanup,
    "node-containerd-tls": check_node_containerd_tls,
    "node-hosts": check_node_hosts,
    "kontrakt": check_kontrakt,
}


# ------------------------------------------------------------------ extraction
def extract(out_dir):
    x = os.path.join(out_dir, "extracted")
    os.makedirs(x, exist_ok=True)
    # the node-setup script as the DaemonSet gets it
    docs = load(out_dir, "node-containerd")
    ds, spec, c, env = node_setup_daemonset(docs, "registry-node-setup")
    cm = one(docs, "ConfigMap", volume(spec, mount_for(c, "/scripts/setup-node.sh")["name"])["configMap"]["name"])
    with open(os.path.join(x, "setup-node.sh"), "w") as f:
        f.write(cm["data"]["setup-node.sh"])
    with open(os.path.join(x, "node-containerd.env.json"), "w") as f:
        json.dump(env, f)
    # the registry's configuration file and the TLS settings
    docs = load(out_dir, "generic-tls")
    dep = one(docs, "Deployment", "registry", "registry")
    _, text = registry_config(docs, dep)
    with open(os.path.join(x, "registry.toml"), "w") as f:
        f.write(text)
    c = container(dep["spec"]["template"]["spec"], "registry")
    with open(os.path.join(x, "registry-tls.env.json"), "w") as f:
        json.dump({k: v for k, v in env_of(c).items() if k.startswith("REGISTRY_TLS")}, f)
    job = one(docs, "Job", "builds-tls", "registry")
    with open(os.path.join(x, "cert-args.json"), "w") as f:
        json.dump(container(job["spec"]["template"]["spec"], "cert", init=True)["args"], f)
    # the s3 variant's storage setting and the names of the variables its Secret must hold
    docs = load(out_dir, "s3")
    dep = one(docs, "Deployment", "registry", "registry")
    c = container(dep["spec"]["template"]["spec"], "registry")
    with open(os.path.join(x, "s3.env.json"), "w") as f:
        cj = one(docs, "CronJob", "registry-gc", "registry")
        g = container(cj["spec"]["jobTemplate"]["spec"]["template"]["spec"], "gc")
        json.dump({"replicas": dep["spec"]["replicas"], "REGISTRY_STORAGE": env_of(c)["REGISTRY_STORAGE"],
                   "REGISTRY_GC_INTERVAL": env_of(c)["REGISTRY_GC_INTERVAL"], "gc_args": g["args"]}, f)
    # kontrakt's build context and push credentials step
    extract_kontrakt(out_dir)
    docs = load(out_dir, "kontrakt")
    cm = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("kontrakt-context")][0]
    os.makedirs(os.path.join(x, "kontrakt"), exist_ok=True)
    for k, v in cm["data"].items():
        with open(os.path.join(x, "kontrakt", k), "w") as f:
            f.write(v)
    print(f"extracted into {x}")


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 64
    try:
        if sys.argv[1] == "render":
            render(sys.argv[2], sys.argv[3])
        elif sys.argv[1] == "check":
            base, out_dir = sys.argv[2], sys.argv[3]
            CHECKS[base](load(out_dir, base))
            print(f"{base}: promises hold")
        elif sys.argv[1] == "extract":
            extract(sys.argv[2])
        elif sys.argv[1] == "kontrakt":
            os.makedirs(sys.argv[2], exist_ok=True)
            with open(os.path.join(sys.argv[2], "kontrakt.yaml"), "w") as f:
                f.write(kustomize("kontrakt"))
            extract_kontrakt(sys.argv[2])
            print(f"extracted into {os.path.join(sys.argv[2], 'extracted')}")
        else:
            print(__doc__, file=sys.stderr)
            return 64
    except Failed as e:
        print(e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
