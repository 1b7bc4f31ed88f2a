"""`kustomize build`, offline, for exactly the features deploy/k8s uses: what `kubectl apply -k`
would render, or the error it would stop at.

No kustomize or kubectl installs from PyPI on a plain Python machine (the wheels found either
download the binary from GitHub at run time, or need Python >= 3.14 and one platform), so the
tests render with this instead. It follows kustomize v5 (sigs.k8s.io/kustomize/api), and
refuses anything it does not implement instead of ignoring it:

- the kustomization file: ``kustomization.yaml``, ``kustomization.yml`` or ``Kustomization``,
  kind ``Kustomization`` (kustomize.config.k8s.io/v1beta1) or ``Component`` (v1alpha1);
- ``resources``: files (YAML documents with apiVersion, kind and metadata.name) and
  directories holding a Kustomization. As kustomize's file loader: a file must lie in or
  below the kustomization's directory, and a directory that contains the one being built is
  a cycle;
- ``components``: directories holding a Component, accumulated after ``resources`` on the
  same resources: the component's resources and generators are added, its patches then
  apply to everything accumulated so far;
- ``configMapGenerator``: ``name`` with ``files`` (``path`` or ``key=path``) and
  ``literals``; the name gets kustomize's content-hash suffix and references to the
  unsuffixed name in pod templates (volumes, projected volumes, env ``valueFrom``,
  ``envFrom``) are rewritten to it;
- ``patches``: JSON 6902 operation lists (``add``, ``remove``, ``replace``, ``test``) from
  ``path`` or inline ``patch``, on the resources a ``target`` selects by group, version,
  kind, name and namespace. Stricter than kustomize: a patch that selects nothing is an
  error (it is a typo, not an intent);
- two resources with the same apiVersion, kind, namespace and name are an error.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["KustomizeError", "build", "configmap_hash"]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
KINDS = {
    "Kustomization": "kustomize.config.k8s.io/v1beta1",
    "Component": "kustomize.config.k8s.io/v1alpha1",
}
FIELDS = {"apiVersion", "kind", "resources", "components", "configMapGenerator", "patches"}
GENERATOR_FIELDS = {"name", "files", "literals"}
PATCH_FIELDS = {"path", "patch", "target"}
TARGET_FIELDS = {"group", "version", "kind", "name", "namespace"}


class KustomizeError(Exception):
    """What `kustomize build` (and so `kubectl apply -k`) would stop at."""


@dataclass
class _Accumulated:
    resources: list[dict[str, Any]] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)  # generated ConfigMap: name -> suffixed


def build(path: str | Path) -> list[dict[str, Any]]:
    """The resources `kustomize build PATH` prints (order not kept), or KustomizeError."""
    acc = _Accumulated()
    _accumulate(Path(path).resolve(), acc, "Kustomization", visited=())
    for resource in acc.resources:
        _rename_configmap_references(resource, acc.renamed)
    return acc.resources


def configmap_hash(data: dict[str, str]) -> str:
    """kustomize's hash suffix of a ConfigMap (api/hasher): the sha256 of Go's JSON of its kind,
    name and data, keys sorted; its first ten hex digits with 0, 1, 3, a, e made g, h, k, m, t.
    The name is always "": kustomize looks it up as one field called "metadata/name", which no
    ConfigMap has (the same hashes as kustomize api v0.21.3's build and its unit tests)."""
    if data:
        fields = ",".join(f"{_go_json(k)}:{_go_json(v)}" for k, v in sorted(data.items()))
        encoded = f'{{"data":{{{fields}}},"kind":"ConfigMap","name":""}}'
    else:  # no data field at all
        encoded = '{"data":"","kind":"ConfigMap","name":""}'
    digest = hashlib.sha256(encoded.encode("utf-8")).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _go_json(text: str) -> str:
    """A string as Go's encoding/json (Go >= 1.22) writes it: HTML characters, U+2028/9 and
    control characters escaped, the short forms for \\b \\f \\n \\r \\t."""
    short = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    out = []
    for char in text:
        if char in {'"', "\\"}:
            out.append("\\" + char)
        elif char in short:
            out.append(short[char])
        elif ord(char) < 0x20 or char in "<>&\u2028\u2029":
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _accumulate(root: Path, acc: _Accumulated, expected: str, visited: tuple[Path, ...]) -> None:
    kustomization = _load_kustomization(root, expected)
    visited = (*visited, root)
    for entry in kustomization.get("resources", []):
        target = _within(root, entry, "resources")
        if target.is_dir():
            _enter(root, target, visited)
            _accumulate(target, acc, "Kustomization", visited)
        else:
            for doc in _documents(target):
                _add(acc, doc, f"{target}")
    for entry in kustomization.get("components", []):
        target = (root / str(entry)).resolve()
        if not target.is_dir():
            raise KustomizeError(f"{root}: component {entry!r} is not a directory")
        _enter(root, target, visited)
        _accumulate(target, acc, "Component", visited)
    for generator in kustomization.get("configMapGenerator", []):
        _generate_configmap(root, generator, acc)
    for patch in kustomization.get("patches", []):
        _apply_patch(root, patch, acc)


def _load_kustomization(root: Path, expected: str) -> dict[str, Any]:
    found = [root / name for name in KUSTOMIZATION_FILES if (root / name).is_file()]
    if not found:
        raise KustomizeError(f"{root}: no kustomization file ({', '.join(KUSTOMIZATION_FILES)})")
    if len(found) > 1:
        raise KustomizeError(f"{root}: more than one kustomization file")
    data = yaml.safe_load(found[0].read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise KustomizeError(f"{found[0]}: not a mapping")
    kind = data.get("kind", "Kustomization")
    if kind != expected:
        raise KustomizeError(f"{found[0]}: kind {kind!r} where a {expected} is expected")
    if data.get("apiVersion", KINDS[kind]) != KINDS[kind]:
        raise KustomizeError(f"{found[0]}: apiVersion of a {kind} is {KINDS[kind]}")
    unknown = set(data) - FIELDS
    if unknown:
        raise KustomizeError(f"{found[0]}: fields not implemented here: {sorted(unknown)}")
    for key in ("resources", "components", "configMapGenerator", "patches"):
        if not isinstance(data.get(key, []), list):
            raise KustomizeError(f"{found[0]}: {key} must be a list")
    return data


def _within(root: Path, entry: object, what: str) -> Path:
    """A file or directory named in a kustomization; files must stay in or below it."""
    if not isinstance(entry, str) or "://" in entry:
        raise KustomizeError(f"{root}: {what} entry {entry!r}: only local paths are implemented")
    target = (root / entry).resolve()
    if not target.exists():
        raise KustomizeError(f"{root}: {what} entry {entry!r}: {target} does not exist")
    if target.is_file() and not target.is_relative_to(root):
        raise KustomizeError(f"{root}: security; file {target} is not in or below {root}")
    return target


def _enter(root: Path, candidate: Path, visited: tuple[Path, ...]) -> None:
    if root.is_relative_to(candidate):
        raise KustomizeError(f"cycle detected: candidate root {candidate} contains visited root {root}")
    if candidate in visited:
        raise KustomizeError(f"cycle detected: {candidate} is already being built")


def _documents(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    for doc in docs:
        if not isinstance(doc, dict) or not all(k in doc for k in ("apiVersion", "kind", "metadata")):
            raise KustomizeError(f"{path}: a document without apiVersion, kind and metadata")
        if not doc["metadata"].get("name"):
            raise KustomizeError(f"{path}: a {doc['kind']} without metadata.name")
        if doc["kind"] in KINDS:
            raise KustomizeError(f"{path}: a {doc['kind']} is listed as a resource file")
    return docs


def _identity(resource: dict[str, Any]) -> tuple[str, str, str, str]:
    meta = resource["metadata"]
    return (resource["apiVersion"], resource["kind"], meta.get("namespace", ""), meta["name"])


def _add(acc: _Accumulated, resource: dict[str, Any], source: str) -> None:
    if any(_identity(r) == _identity(resource) for r in acc.resources):
        raise KustomizeError(
            f"{source}: may not add resource with an already registered id {_identity(resource)}"
        )
    acc.resources.append(resource)


def _generate_configmap(root: Path, generator: Any, acc: _Accumulated) -> None:
    if not isinstance(generator, dict) or not generator.get("name"):
        raise KustomizeError(f"{root}: a configMapGenerator entry needs a name")
    unknown = set(generator) - GENERATOR_FIELDS
    if unknown:
        raise KustomizeError(f"{root}: configMapGenerator fields not implemented here: {sorted(unknown)}")
    name = str(generator["name"])
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, rel = str(entry).rpartition("=")
        path = _within(root, rel, "configMapGenerator file")
        if not path.is_file():
            raise KustomizeError(f"{root}: configMapGenerator file {rel!r} is not a file")
        data[key or path.name] = path.read_text(encoding="utf-8")
    for entry in generator.get("literals", []):
        key, sep, value = str(entry).partition("=")
        if not sep:
            raise KustomizeError(f"{root}: literal {entry!r} is not key=value")
        data[key] = value
    if len(data) != len(generator.get("files", [])) + len(generator.get("literals", [])):
        raise KustomizeError(f"{root}: configMapGenerator {name}: a key appears twice")
    suffixed = f"{name}-{configmap_hash(data)}"
    _add(
        acc,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": suffixed}, "data": data},
        str(root),
    )
    acc.renamed[name] = suffixed


def _apply_patch(root: Path, patch: Any, acc: _Accumulated) -> None:
    if not isinstance(patch, dict) or set(patch) - PATCH_FIELDS or ("path" in patch) == ("patch" in patch):
        raise KustomizeError(f"{root}: a patch has exactly one of path or patch, and a target")
    text = (
        _within(root, patch["path"], "patch").read_text(encoding="utf-8")
        if "path" in patch
        else patch["patch"]
    )
    operations = yaml.safe_load(text)
    if not isinstance(operations, list):
        raise KustomizeError(f"{root}: only JSON 6902 patches (a list of operations) are implemented")
    target = patch.get("target")
    if not isinstance(target, dict) or not target or set(target) - TARGET_FIELDS:
        raise KustomizeError(f"{root}: a JSON 6902 patch needs a target of {sorted(TARGET_FIELDS)}")
    selected = [r for r in acc.resources if _selected(r, target)]
    if not selected:
        raise KustomizeError(f"{root}: patch target {target} selects no resource")
    for resource in selected:
        patched = copy.deepcopy(resource)
        for op in operations:
            patched = _json6902(patched, op, root)
        resource.clear()
        resource.update(patched)


def _selected(resource: dict[str, Any], target: dict[str, Any]) -> bool:
    group, _, version = resource["apiVersion"].rpartition("/")
    actual = {
        "group": group,
        "version": version,
        "kind": resource["kind"],
        "name": resource["metadata"]["name"],
        "namespace": resource["metadata"].get("namespace", ""),
    }
    return all(actual[key] == value for key, value in target.items())


def _json6902(doc: Any, op: Any, root: Path) -> Any:
    if not isinstance(op, dict) or op.get("op") not in {"add", "remove", "replace", "test"}:
        raise KustomizeError(f"{root}: JSON 6902 operation {op!r} is not implemented")
    pointer = str(op.get("path", ""))
    if not pointer.startswith("/"):
        raise KustomizeError(f"{root}: JSON 6902 path {pointer!r} must start with /")
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]
    node = doc
    for part in parents:
        node = _step(node, part, pointer, root)
    kind = op["op"]
    if kind == "test":
        if _step(node, last, pointer, root) != op.get("value"):
            raise KustomizeError(f"{root}: JSON 6902 test failed at {pointer}")
    elif isinstance(node, dict):
        if kind != "add" and last not in node:
            raise KustomizeError(f"{root}: JSON 6902 {kind}: {pointer} does not exist")
        if kind == "remove":
            del node[last]
        else:
            node[last] = copy.deepcopy(op.get("value"))
    elif isinstance(node, list):
        index = (
            len(node) if (kind == "add" and last == "-") else _index(node, last, pointer, root, kind == "add")
        )
        if kind == "remove":
            del node[index]
        elif kind == "replace":
            node[index] = copy.deepcopy(op.get("value"))
        else:
            node.insert(index, copy.deepcopy(op.get("value")))
    else:
        raise KustomizeError(f"{root}: JSON 6902 {kind}: the parent of {pointer} is not a container")
    return doc


def _step(node: Any, part: str, pointer: str, root: Path) -> Any:
    if isinstance(node, dict) and part in node:
        return node[part]
    if isinstance(node, list):
        return node[_index(node, part, pointer, root, False)]
    raise KustomizeError(f"{root}: JSON 6902: {pointer} does not exist")


def _index(node: list[Any], part: str, pointer: str, root: Path, end_ok: bool) -> int:
    if not part.isdigit() or int(part) > len(node) - (0 if end_ok else 1):
        raise KustomizeError(f"{root}: JSON 6902: {pointer} is not an index of its list")
    return int(part)


def _rename_configmap_references(resource: dict[str, Any], renamed: dict[str, str]) -> None:
    spec = resource.get("spec") or {}
    pod = {
        "Pod": spec,
        "CronJob": ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec"),
    }.get(resource["kind"], (spec.get("template") or {}).get("spec"))
    if not isinstance(pod, dict):
        return

    def rename(ref: dict[str, Any] | None) -> None:
        if ref and ref.get("name") in renamed:
            ref["name"] = renamed[ref["name"]]

    for volume in pod.get("volumes", []):
        rename(volume.get("configMap"))
        for source in (volume.get("projected") or {}).get("sources", []):
            rename(source.get("configMap"))
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        for env in container.get("env", []):
            rename((env.get("valueFrom") or {}).get("configMapKeyRef"))
        for env_from in container.get("envFrom", []):
            rename(env_from.get("configMapRef"))
