"""Validates the Kubernetes manifests of deploy/kubernetes (run by scripts/check-kubernetes.sh).

What is checked, with no cluster (nothing is applied anywhere):

1. The kustomization: `kustomization.yaml` lists every YAML file of the directory exactly once
   and nothing else, and uses only the fields the built-in renderer below understands.
2. Rendering: the kustomization is rendered by a small built-in renderer (the listed files in
   order, then the `images` transformer). When `kubectl` is on PATH, `kubectl kustomize` renders
   it too and both renderings must hold the same objects.
3. Schema: every rendered object is validated with the PyPI package kubernetes-validate (the
   Kubernetes OpenAPI schema as JSON schema) in strict mode (unknown fields are errors) against
   each version in VERSIONS. A kind without a schema is an error, not a warning.
4. Consistency the schema cannot see: names are DNS-1123, namespaced objects are in a
   Namespace defined here and cluster-scoped ones have none, selectors match their pod
   templates, probes and Services name declared container ports, service accounts, config
   maps (and their keys), priority classes and Ingress backends exist, every Secret a pod
   references is one docs/cluster.md tells the operator to create, every workload container
   has resource requests and readiness and liveness probes, and no command or argument holds
   `$$` (Kubernetes turns it into `$`) or a `$(NAME)` of no env var of its container.

5. With `--sandpit BIN`: every `--option` the manifests pass to `sandpit SUBCOMMAND` is listed by
   `BIN SUBCOMMAND --help` (or `BIN --help`), so the manifests follow the CLI.

`--self-test` also breaks the manifests on purpose (a copy in a temp dir), one way at a time,
and checks that each broken copy fails with the expected message, so this check can fail.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

# The oldest Kubernetes version the manifests support (the container securityContext's
# appArmorProfile field is GA since 1.30) and the newest kubernetes-validate knows.
VERSIONS = ["1.30", "1.37"]

KUSTOMIZATION = "kustomization.yaml"
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "resources", "images"}

CLUSTER_SCOPED = {
    "Namespace",
    "PriorityClass",
    "ClusterRole",
    "ClusterRoleBinding",
    "StorageClass",
    "IngressClass",
    "CustomResourceDefinition",
}
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet"}

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
PORT_NAME = re.compile(r"^(?=.{1,15}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
SECRET_IN_DOCS = re.compile(r"kubectl\s+-n\s+(\S+)\s+create\s+secret\s+\S+\s+([a-z0-9.-]+)")


class Problems:
    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}")


def load_yaml_documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def where(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{obj.get('kind', '?')}/{ns + '/' if ns else ''}{name}"


# 1 + 2: the kustomization and its rendering.


def check_kustomization(directory: Path, problems: Problems) -> dict[str, Any] | None:
    path = directory / KUSTOMIZATION
    if not path.is_file():
        problems.add(str(path), "missing")
        return None
    k = yaml.safe_load(path.read_text()) or {}
    unknown = sorted(set(k) - KUSTOMIZATION_FIELDS)
    if unknown:
        problems.add(
            KUSTOMIZATION,
            f"unsupported fields {unknown} (the built-in renderer knows {sorted(KUSTOMIZATION_FIELDS)})",
        )
    if k.get("kind") != "Kustomization":
        problems.add(KUSTOMIZATION, "kind is not Kustomization")
    resources = k.get("resources") or []
    if len(set(resources)) != len(resources):
        problems.add(KUSTOMIZATION, "a resource is listed twice")
    on_disk = {
        p.name
        for p in directory.iterdir()
        if p.suffix in (".yaml", ".yml") and p.name != KUSTOMIZATION
    }
    for missing in sorted(on_disk - set(resources)):
        problems.add(KUSTOMIZATION, f"{missing} is in the directory but not listed in resources")
    for extra in sorted(set(resources) - on_disk):
        problems.add(
            KUSTOMIZATION, f"{extra} is listed in resources but is not a file of the directory"
        )
    return k


def render(directory: Path, k: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The objects of the kustomization: listed files in order, images transformed."""
    images = {i["name"]: i for i in k.get("images") or []}
    out = []
    for name in k.get("resources") or []:
        path = directory / name
        if not path.is_file():
            continue
        for doc in load_yaml_documents(path):
            for container in containers(doc) if isinstance(doc, dict) else []:
                image = container.get("image")
                if image in images:
                    new = images[image]
                    container["image"] = new.get("newName", image)
                    if "newTag" in new:
                        container["image"] += f":{new['newTag']}"
            out.append((name, doc))
    return out


def render_with_kubectl(directory: Path) -> list[dict[str, Any]] | None:
    # SANDPIT_KUBECTL: another kubectl, or empty to render with the built-in renderer only.
    kubectl = os.environ.get("SANDPIT_KUBECTL", shutil.which("kubectl"))
    if not kubectl:
        return None
    result = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"kubectl kustomize failed: {result.stderr.strip()}")
    return [d for d in yaml.safe_load_all(result.stdout) if d is not None]


def same_objects(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    def key(o: dict[str, Any]) -> str:
        return yaml.safe_dump(o, sort_keys=True)

    return sorted(map(key, a)) == sorted(map(key, b))


# 3: the schema.


def check_schema(objects: list[tuple[str, dict[str, Any]]], problems: Problems) -> None:
    for file, obj in objects:
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                path = ".".join(str(p) for p in e.path) or "(top)"
                problems.add(
                    f"{file} {where(obj)}", f"Kubernetes {version} schema: {path}: {e.message}"
                )
            except kubernetes_validate.SchemaNotFoundError as e:
                problems.add(f"{file} {where(obj)}", f"no schema: {e.message}")
            except (KeyError, TypeError) as e:
                problems.add(f"{file} {where(obj)}", f"not a Kubernetes object ({e!r})")


# 4: consistency.


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    if obj.get("kind") in WORKLOADS:
        return ((obj.get("spec") or {}).get("template") or {}).get("spec")
    if obj.get("kind") == "Pod":
        return obj.get("spec")
    return None


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj) or {}
    return list(spec.get("containers") or []) + list(spec.get("initContainers") or [])


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def expansion_problems(arg: str, env_names: set[str]) -> list[str]:
    """What Kubernetes' own `$(VAR)` expansion of a command or argument would do unexpectedly:
    `$$` becomes `$` (so a shell never sees `$$`), and `$(NAME)` of no env var of the
    container stays as it is (a shell would run it as a command)."""
    out = []
    i = 0
    while i < len(arg) - 1:
        if arg[i] == "$" and arg[i + 1] == "$":
            out.append(f"`$$` in {arg[:40]!r}…: Kubernetes turns it into `$`")
            i += 2
            continue
        if arg[i] == "$" and arg[i + 1] == "(":
            end = arg.find(")", i)
            name = arg[i + 2 : end] if end > 0 else ""
            if name not in env_names:
                out.append(f"`$({name})` names no env var of the container: Kubernetes leaves it")
        i += 1
    return out


def documented_secrets(docs: Path) -> set[tuple[str, str]]:
    return set(SECRET_IN_DOCS.findall(docs.read_text())) if docs.is_file() else set()


def check_consistency(
    objects: list[tuple[str, dict[str, Any]]], docs: Path, problems: Problems
) -> None:
    objs = [o for _, o in objects if isinstance(o, dict)]
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for o in objs:
        by_kind.setdefault(o.get("kind", ""), []).append(o)

    def named(kind: str, ns: str | None, name: str) -> dict[str, Any] | None:
        for o in by_kind.get(kind, []):
            meta = o.get("metadata") or {}
            if meta.get("name") == name and meta.get("namespace") == ns:
                return o
        return None

    namespaces = {(o.get("metadata") or {}).get("name") for o in by_kind.get("Namespace", [])}
    seen = set()
    for o in objs:
        meta = o.get("metadata") or {}
        name, ns, kind = meta.get("name", ""), meta.get("namespace"), o.get("kind", "")
        w = where(o)
        if (kind, ns, name) in seen:
            problems.add(w, "defined twice")
        seen.add((kind, ns, name))
        if not DNS_SUBDOMAIN.match(name) or (
            kind in {"Namespace", "Service"} and not DNS_LABEL.match(name)
        ):
            problems.add(w, f"name {name!r} is not a valid DNS-1123 name")
        if kind in CLUSTER_SCOPED:
            if ns is not None:
                problems.add(w, "cluster-scoped kind with a namespace")
        elif ns not in namespaces:
            problems.add(
                w,
                f"namespace {ns!r} is not one of the Namespaces defined here {sorted(namespaces)}",
            )

    docs_secrets = documented_secrets(docs)
    for o in objs:
        spec = pod_spec(o)
        if spec is None:
            continue
        w = where(o)
        ns = (o.get("metadata") or {}).get("namespace")
        template_labels = ((o["spec"].get("template") or {}).get("metadata") or {}).get(
            "labels"
        ) or {}
        selector = (o["spec"].get("selector") or {}).get("matchLabels") or {}
        if not selector or not matches(selector, template_labels):
            problems.add(
                w, f"selector {selector} does not match the pod template's labels {template_labels}"
            )
        sa = spec.get("serviceAccountName")
        if sa and named("ServiceAccount", ns, sa) is None:
            problems.add(w, f"service account {sa!r} is not defined in {ns}")
        pc = spec.get("priorityClassName")
        if pc and not pc.startswith("system-") and named("PriorityClass", None, pc) is None:
            problems.add(w, f"priority class {pc!r} is not defined")
        secrets: set[str] = set()
        for volume in spec.get("volumes") or []:
            if "secret" in volume:
                secrets.add(volume["secret"].get("secretName", ""))
        volume_names = {v.get("name") for v in spec.get("volumes") or []}
        for c in containers(o):
            cw = f"{w} container {c.get('name')}"
            ports = {p.get("name") for p in c.get("ports") or [] if p.get("name")}
            for p in c.get("ports") or []:
                if p.get("name") and not PORT_NAME.match(p["name"]):
                    problems.add(
                        cw,
                        f"port name {p['name']!r} is not a valid port name (at most 15 characters)",
                    )
            for probe_kind in ("readinessProbe", "livenessProbe", "startupProbe"):
                probe = c.get(probe_kind) or {}
                port = (probe.get("httpGet") or probe.get("tcpSocket") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    problems.add(
                        cw, f"{probe_kind} uses port {port!r}, which the container does not declare"
                    )
            if o.get("kind") in WORKLOADS and c in (spec.get("containers") or []):
                requests = (c.get("resources") or {}).get("requests") or {}
                if not {"cpu", "memory"} <= set(requests):
                    problems.add(cw, "no cpu and memory resource requests")
                for probe_kind in ("readinessProbe", "livenessProbe"):
                    if probe_kind not in c:
                        problems.add(cw, f"no {probe_kind}")
            env_names = {e.get("name") for e in c.get("env") or []}
            for arg in list(c.get("command") or []) + list(c.get("args") or []):
                for problem in expansion_problems(str(arg), env_names):
                    problems.add(cw, problem)
            for mount in c.get("volumeMounts") or []:
                if mount.get("name") not in volume_names:
                    problems.add(
                        cw, f"volume mount {mount.get('name')!r} names no volume of the pod"
                    )
            for env in c.get("env") or []:
                source = env.get("valueFrom") or {}
                if "secretKeyRef" in source:
                    secrets.add(source["secretKeyRef"].get("name", ""))
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    cm = named("ConfigMap", ns, ref.get("name", ""))
                    if cm is None:
                        problems.add(cw, f"config map {ref.get('name')!r} is not defined in {ns}")
                    elif ref.get("key") not in (cm.get("data") or {}):
                        problems.add(
                            cw, f"config map {ref.get('name')!r} has no key {ref.get('key')!r}"
                        )
        for secret in sorted(secrets):
            if (ns, secret) not in docs_secrets:
                problems.add(
                    w,
                    f"Secret {ns}/{secret} is referenced but docs/cluster.md has no "
                    f"`kubectl -n {ns} create secret ... {secret}` for the operator",
                )

    for svc in by_kind.get("Service", []):
        w, ns = where(svc), svc["metadata"].get("namespace")
        selector = svc["spec"].get("selector") or {}
        pods = [o for o in objs if pod_spec(o) is not None and o["metadata"].get("namespace") == ns]
        targets = [
            o
            for o in pods
            if matches(selector, o["spec"]["template"]["metadata"].get("labels") or {})
        ]
        if not targets:
            problems.add(w, f"selector {selector} matches no pod template in {ns}")
        for port in svc["spec"].get("ports") or []:
            target = port.get("targetPort")
            if isinstance(target, str) and not any(
                target in {p.get("name") for c in containers(t) for p in c.get("ports") or []}
                for t in targets
            ):
                problems.add(w, f"targetPort {target!r} is not a port of the selected pods")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        w, ns = where(pdb), pdb["metadata"].get("namespace")
        selector = (pdb["spec"].get("selector") or {}).get("matchLabels") or {}
        if not any(
            matches(selector, o["spec"]["template"]["metadata"].get("labels") or {})
            for o in objs
            if o.get("kind") in WORKLOADS and o["metadata"].get("namespace") == ns
        ):
            problems.add(w, f"selector {selector} matches no workload in {ns}")
    for ing in by_kind.get("Ingress", []):
        w, ns = where(ing), ing["metadata"].get("namespace")
        for rule in ing["spec"].get("rules") or []:
            host = rule.get("host", "")
            labels = host.split(".")
            if "*" in host and (labels[0] != "*" or "*" in ".".join(labels[1:])):
                problems.add(w, f"host {host!r}: a wildcard may only be the whole first label")
            for path in (rule.get("http") or {}).get("paths") or []:
                backend = (path.get("backend") or {}).get("service") or {}
                svc = named("Service", ns, backend.get("name", ""))
                if svc is None:
                    problems.add(
                        w, f"backend service {backend.get('name')!r} is not defined in {ns}"
                    )
                    continue
                port = backend.get("port") or {}
                svc_ports = svc["spec"].get("ports") or []
                if "name" in port and port["name"] not in {p.get("name") for p in svc_ports}:
                    problems.add(
                        w,
                        f"backend port {port['name']!r} is not a port of service {backend['name']}",
                    )
                if "number" in port and port["number"] not in {p.get("port") for p in svc_ports}:
                    problems.add(
                        w,
                        f"backend port {port['number']} is not a port of service {backend['name']}",
                    )


# 5: the command lines against the binary.

SANDPIT_COMMAND = re.compile(r"\bsandpit\s+([a-z][a-z-]*)((?:\s+\S+)*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")


def sandpit_invocations(obj: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(container, subcommand, flags) of each container that runs `sandpit SUBCOMMAND ...`."""
    out = []
    for c in containers(obj):
        text = " ".join(str(a) for a in list(c.get("command") or []) + list(c.get("args") or []))
        text = text.replace("\\\n", " ")
        m = SANDPIT_COMMAND.search(text)
        if m:
            out.append((c.get("name", "?"), m.group(1), FLAG.findall(m.group(2))))
    return out


def help_flags(binary: str, *args: str) -> set[str] | None:
    result = subprocess.run([binary, *args, "--help"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return None
    return set(FLAG.findall(result.stdout))


def check_flags(objects: list[tuple[str, dict[str, Any]]], binary: str, problems: Problems) -> int:
    """Every `--flag` the manifests pass to `sandpit SUBCOMMAND` is one that
    `sandpit SUBCOMMAND --help` (or `sandpit --help`, for the global ones) lists."""
    checked = 0
    global_flags = help_flags(binary) or set()
    for file, obj in objects:
        for container, sub, flags in sandpit_invocations(obj):
            w = f"{file} {where(obj)} container {container}"
            known = help_flags(binary, sub)
            if known is None:
                problems.add(w, f"`sandpit {sub} --help` fails: {binary} has no subcommand {sub!r}")
                continue
            for flag in flags:
                checked += 1
                if flag not in known | global_flags:
                    problems.add(
                        w, f"`sandpit {sub}` has no option {flag} (not in `sandpit {sub} --help`)"
                    )
    return checked


def check(
    directory: Path, docs: Path, verbose: bool = True, binary: str | None = None
) -> list[str]:
    """Every problem of the manifests in `directory` (empty: valid)."""
    problems = Problems()
    k = check_kustomization(directory, problems)
    if k is None:
        return problems.items
    try:
        objects = render(directory, copy.deepcopy(k))
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as e:
        problems.add(str(directory), f"cannot render: {e}")
        return problems.items
    for file, obj in objects:
        if not isinstance(obj, dict):
            problems.add(file, "a YAML document that is not an object")
    objects = [(f, o) for f, o in objects if isinstance(o, dict)]
    try:
        rendered = render_with_kubectl(directory)
    except RuntimeError as e:
        problems.add(str(directory), str(e))
        rendered = None
    if rendered is None:
        if verbose:
            print("note: no kubectl: rendered with the built-in renderer only")
    elif not same_objects(rendered, [o for _, o in objects]):
        problems.add(
            str(directory), "kubectl kustomize renders other objects than the built-in renderer"
        )
    elif verbose:
        print(f"kubectl kustomize: {len(rendered)} objects, the same as the built-in renderer's")
    check_schema(objects, problems)
    try:
        check_consistency(objects, docs, problems)
    except (KeyError, TypeError, AttributeError) as e:
        # Malformed objects the schema check has reported already.
        problems.add(str(directory), f"consistency checks stopped at a malformed object ({e!r})")
    if binary is not None:
        n = check_flags(objects, binary, problems)
        if verbose:
            print(f"{n} command-line options checked against {binary} --help")
    if verbose:
        for file, obj in objects:
            print(f"  {file}: {where(obj)}")
        print(
            f"{len(objects)} objects from {len(k.get('resources') or [])} files, strict schema "
            f"of Kubernetes {' and '.join(VERSIONS)} (kubernetes-validate {kubernetes_validate.__version__})"
        )
    return problems.items


# The self-test: one deliberate breakage at a time, each must fail with its message.

Mutation = Callable[[Path], None]


def edit_yaml(file: str, edit: Callable[[list[dict[str, Any]]], None]) -> Mutation:
    def apply(directory: Path) -> None:
        path = directory / file
        docs = load_yaml_documents(path)
        edit(docs)
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))

    return apply


def first(kind: str, f: Callable[[dict[str, Any]], None]) -> Callable[[list[dict[str, Any]]], None]:
    def edit(docs: list[dict[str, Any]]) -> None:
        f(next(d for d in docs if d["kind"] == kind))

    return edit


def container0(o: dict[str, Any]) -> dict[str, Any]:
    return o["spec"]["template"]["spec"]["containers"][0]


def rename_key(d: dict[str, Any], old: str, new: str) -> None:
    d[new] = d.pop(old)


# (what, how to break a copy, a problem that must be reported[, text no problem may contain])
SELF_TESTS: list[tuple[Any, ...]] = [
    (
        "a misspelt field (readinesProbe) is refused by the strict schema",
        edit_yaml(
            "control-plane.yaml",
            first(
                "Deployment", lambda o: rename_key(container0(o), "readinessProbe", "readinesProbe")
            ),
        ),
        "Additional properties are not allowed ('readinesProbe' was unexpected)",
    ),
    (
        "a wrong type (replicas: 'two') is refused by the schema",
        edit_yaml(
            "control-plane.yaml", first("Deployment", lambda o: o["spec"].update(replicas="two"))
        ),
        "schema: spec.replicas: 'two' is not of type 'integer'",
    ),
    (
        "a missing required field (DaemonSet without selector) is refused by the schema",
        edit_yaml("node.yaml", first("DaemonSet", lambda o: o["spec"].pop("selector"))),
        "'selector' is a required property",
    ),
    (
        "a removed API version (extensions/v1beta1 Ingress) has no schema",
        edit_yaml(
            "ingress.yaml", first("Ingress", lambda o: o.update(apiVersion="extensions/v1beta1"))
        ),
        "no schema: Couldn't find schema for kind Ingress with api version extensions/v1beta1",
    ),
    (
        "a field newer than the oldest supported version (pod-level resources) fails 1.30 only",
        edit_yaml(
            "node.yaml",
            first(
                "DaemonSet",
                lambda o: o["spec"]["template"]["spec"].update(
                    resources={"requests": {"cpu": "1"}}
                ),
            ),
        ),
        "Kubernetes 1.30 schema: spec.template.spec: Additional properties are not allowed ('resources' was unexpected)",
        "Kubernetes 1.37",
    ),
    (
        "a selector that does not match the pod template",
        edit_yaml(
            "control-plane.yaml",
            first(
                "Deployment",
                lambda o: o["spec"]["selector"]["matchLabels"].update(
                    {"app.kubernetes.io/component": "api"}
                ),
            ),
        ),
        "does not match the pod template's labels",
    ),
    (
        "a probe on an undeclared port",
        edit_yaml(
            "node.yaml",
            first(
                "DaemonSet",
                lambda o: container0(o)["livenessProbe"]["httpGet"].update(port="healthz"),
            ),
        ),
        "livenessProbe uses port 'healthz', which the container does not declare",
    ),
    (
        "a Secret the docs do not tell the operator to create",
        edit_yaml(
            "control-plane.yaml",
            first(
                "Deployment",
                lambda o: container0(o)["env"][0]["valueFrom"]["secretKeyRef"].update(
                    name="sandpit-db"
                ),
            ),
        ),
        "Secret sandpit/sandpit-db is referenced but docs/cluster.md has no",
    ),
    (
        "an Ingress backend port the Service does not have",
        edit_yaml(
            "ingress.yaml",
            first(
                "Ingress",
                lambda o: o["spec"]["rules"][1]["http"]["paths"][0]["backend"]["service"][
                    "port"
                ].update(name="https"),
            ),
        ),
        "backend port 'https' is not a port of service sandpit-api",
    ),
    (
        "a workload container without resource requests",
        edit_yaml(
            "node.yaml", first("DaemonSet", lambda o: container0(o)["resources"].pop("requests"))
        ),
        "no cpu and memory resource requests",
    ),
    (
        "`$$` in a shell argument (Kubernetes turns it into `$`)",
        edit_yaml(
            "node.yaml",
            first(
                "DaemonSet",
                lambda o: container0(o).update(
                    args=[container0(o)["args"][0].replace("echo 0 >", "echo $$ >")]
                ),
            ),
        ),
        "`$$` in",
    ),
    (
        "a YAML syntax error",
        lambda d: (d / "ingress.yaml").write_text(
            (d / "ingress.yaml").read_text() + "  bad: [unclosed\n"
        ),
        "cannot render:",
    ),
    (
        "a manifest file not listed in kustomization.yaml",
        lambda d: (d / "extra.yaml").write_text(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n  namespace: sandpit\n"
        ),
        "extra.yaml is in the directory but not listed in resources",
    ),
    (
        "a listed file that is missing",
        lambda d: (d / "ingress.yaml").unlink(),
        "ingress.yaml is listed in resources but is not a file of the directory",
    ),
    (
        "the committed broken manifest (scripts/kubernetes/broken.yaml)",
        lambda d: (
            shutil.copy(Path(__file__).with_name("broken.yaml"), d / "broken.yaml"),
            (d / KUSTOMIZATION).write_text(
                (d / KUSTOMIZATION)
                .read_text()
                .replace("  - ingress.yaml\n", "  - ingress.yaml\n  - broken.yaml\n")
            ),
        ),
        "Kubernetes 1.37 schema: spec.template.spec.containers.0.ports.0.containerPort: 'http' is not of type 'integer'",
    ),
]


def self_test(directory: Path, docs: Path, binary: str | None) -> int:
    passed = failed = 0
    tests = list(SELF_TESTS)
    if binary is not None:
        tests += [
            (
                "an option `sandpit serve` does not have",
                edit_yaml(
                    "control-plane.yaml",
                    first(
                        "Deployment",
                        lambda o: container0(o)["args"].append("--listen-address=0.0.0.0:7070"),
                    ),
                ),
                "`sandpit serve` has no option --listen-address",
            ),
            (
                "an option `sandpit node` does not have (in the shell script)",
                edit_yaml(
                    "node.yaml",
                    first(
                        "DaemonSet",
                        lambda o: container0(o).update(
                            args=[
                                container0(o)["args"][0].replace(
                                    "--health-listen", "--healthz-listen"
                                )
                            ]
                        ),
                    ),
                ),
                "`sandpit node` has no option --healthz-listen",
            ),
        ]
    problems = check(directory, docs, verbose=False, binary=binary)
    if problems:
        print("FAIL the committed manifests are not valid:")
        for p in problems:
            print(f"    {p}")
        failed += 1
    else:
        print("ok   the committed manifests pass")
        passed += 1
    for name, mutate, expected, *rest in tests:
        absent = rest[0] if rest else None
        with tempfile.TemporaryDirectory() as tmp:
            copy_dir = Path(tmp) / "kubernetes"
            shutil.copytree(directory, copy_dir)
            mutate(copy_dir)
            problems = check(copy_dir, docs, verbose=False, binary=binary)
        if any(expected in p for p in problems) and not any(
            absent and absent in p for p in problems
        ):
            print(f"ok   {name}")
            passed += 1
        else:
            print(f"FAIL {name}: expected a problem containing {expected!r}, got {problems}")
            failed += 1
    print(f"kubernetes manifest self-test: {passed} passed, {failed} failed")
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", type=Path, help="the kustomization directory")
    parser.add_argument("--docs", type=Path, required=True, help="docs/cluster.md")
    parser.add_argument(
        "--self-test", action="store_true", help="also break the manifests on purpose"
    )
    parser.add_argument(
        "--sandpit",
        metavar="BIN",
        help="also check the options the manifests pass to this sandpit binary",
    )
    args = parser.parse_args()
    problems = check(args.directory, args.docs, binary=args.sandpit)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problems in {args.directory}", file=sys.stderr)
        return 1
    print(f"{args.directory}: valid")
    if args.self_test:
        return self_test(args.directory, args.docs, args.sandpit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
