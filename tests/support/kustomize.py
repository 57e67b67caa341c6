"""A small kustomize renderer for tests: exactly the features ``k8s/`` uses, nothing else.

No kustomize binary is installable from PyPI for this project's Python, so the tests render the
manifests with this module. It follows ``kustomize build`` for the features below and raises
:class:`Unsupported` for any other kustomization key, option or shape, so that a manifest change
that needs more cannot pass on a guess.

Supported, in kustomize's order:

1. ``resources``: YAML files (multi-document) and folders holding a kustomization, relative
   paths. Remote URLs are refused.
2. ``components``: folders whose kustomization is ``kind: Component`` with only ``resources``;
   their resources join the parent's.
3. ``configMapGenerator``: ``name`` + ``files`` (``path`` or ``key=path``), files inside the
   kustomization's folder only (kustomize's default load restrictor, symlinks resolved), name
   suffixed with a hash of the content; references in pod templates are rewritten to it
   (volumes, projected sources, ``env[].valueFrom.configMapKeyRef``, ``envFrom[].configMapRef``).
   The suffix is a content hash like kustomize's, but not the same value: tests never rely on it.
4. ``namespace``: set on every namespaced object; a Namespace object must already carry that
   name (kustomize would rename it; we refuse instead).
5. ``labels``: ``pairs`` with ``includeSelectors: false``; ``includeTemplates: true`` also labels
   the pod templates of Deployments and StatefulSets.
6. ``images``: ``name`` + ``newName`` / ``newTag`` for containers and init containers.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

KINDS = ("Kustomization", "Component")
KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "configMapGenerator",
    "namespace",
    "labels",
    "images",
}
COMPONENT_KEYS = {"apiVersion", "kind", "resources"}
CLUSTER_SCOPED = {"Namespace"}
NAMESPACED = {
    "ConfigMap",
    "Secret",
    "Service",
    "StatefulSet",
    "Deployment",
    "NetworkPolicy",
}
WORKLOADS = {"Deployment", "StatefulSet"}


class Unsupported(ValueError):
    """The kustomization uses something this renderer does not implement."""


def _load_kustomization(folder: Path) -> dict[str, Any]:
    path = folder / "kustomization.yaml"
    if not path.is_file():
        raise Unsupported(f"{folder}: no kustomization.yaml (other file names are not supported)")
    doc = yaml.safe_load(path.read_text())
    if not isinstance(doc, dict) or doc.get("kind") not in KINDS:
        raise Unsupported(f"{path}: kind must be one of {KINDS}")
    allowed = KUSTOMIZATION_KEYS if doc["kind"] == "Kustomization" else COMPONENT_KEYS
    unknown = set(doc) - allowed
    if unknown:
        raise Unsupported(f"{path}: unsupported keys {sorted(unknown)}")
    return doc


def _read_documents(path: Path) -> list[dict[str, Any]]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise Unsupported(f"{path}: every document must be an object with apiVersion and kind")
        if d["kind"] not in NAMESPACED | CLUSTER_SCOPED:
            raise Unsupported(f"{path}: kind {d['kind']} is not known to this renderer")
    return docs


def _inside(root: Path, relative: str) -> Path:
    """``root/relative``, refused when it (symlinks resolved) leaves ``root``, as kustomize does."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise Unsupported(f"{root}: {relative} is outside the kustomization folder")
    return path


def content_hash(kind: str, name: str, data: dict[str, str]) -> str:
    """A ten-character name suffix that changes with the content (kustomize's differs)."""
    encoded = json.dumps({"data": data, "kind": kind, "name": name}, sort_keys=True)
    return hashlib.sha256(encoded.encode()).hexdigest()[:10]


def _pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] in WORKLOADS:
        return [doc["spec"]["template"]["spec"]]
    return []


def _containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def _rename_config_maps(docs: list[dict[str, Any]], renames: dict[str, str]) -> None:
    def fix(ref: dict[str, Any] | None, key: str = "name") -> None:
        if ref is not None and ref.get(key) in renames:
            ref[key] = renames[ref[key]]

    for doc in docs:
        for pod in _pod_specs(doc):
            for volume in pod.get("volumes", []):
                fix(volume.get("configMap"))
                for source in volume.get("projected", {}).get("sources", []):
                    fix(source.get("configMap"))
            for c in _containers(pod):
                for env in c.get("env", []):
                    fix(env.get("valueFrom", {}).get("configMapKeyRef"))
                for env_from in c.get("envFrom", []):
                    fix(env_from.get("configMapRef"))


def _generate_config_maps(folder: Path, specs: list[dict[str, Any]]) -> tuple[list, dict]:
    out, renames = [], {}
    for spec in specs:
        unknown = set(spec) - {"name", "files"}
        if unknown:
            raise Unsupported(f"{folder}: configMapGenerator keys {sorted(unknown)}")
        data: dict[str, str] = {}
        for entry in spec["files"]:
            key, _, rel = entry.rpartition("=") if "=" in entry else ("", "", entry)
            path = _inside(folder, rel)
            data[key or Path(rel).name] = path.read_text()
        name = spec["name"]
        hashed = f"{name}-{content_hash('ConfigMap', name, data)}"
        renames[name] = hashed
        out.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": hashed}, "data": data}
        )
    return out, renames


def _set_namespace(docs: list[dict[str, Any]], namespace: str) -> None:
    for doc in docs:
        if doc["kind"] in CLUSTER_SCOPED:
            if doc["kind"] == "Namespace" and doc["metadata"]["name"] != namespace:
                raise Unsupported(
                    f"Namespace {doc['metadata']['name']} under namespace: {namespace}"
                )
            continue
        doc["metadata"]["namespace"] = namespace


def _add_labels(docs: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        unknown = set(entry) - {"pairs", "includeSelectors", "includeTemplates"}
        if unknown or entry.get("includeSelectors", False):
            raise Unsupported(
                f"labels: only pairs, includeSelectors: false, includeTemplates: {entry}"
            )
        pairs = entry["pairs"]
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(pairs)
            if entry.get("includeTemplates", False) and doc["kind"] in WORKLOADS:
                template = doc["spec"]["template"].setdefault("metadata", {})
                template.setdefault("labels", {}).update(pairs)


def _set_images(docs: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        unknown = set(entry) - {"name", "newName", "newTag"}
        if unknown:
            raise Unsupported(f"images: unsupported keys {sorted(unknown)}")
        for doc in docs:
            for pod in _pod_specs(doc):
                for c in _containers(pod):
                    if "@" in c["image"]:
                        raise Unsupported(f"images: digests are not supported ({c['image']})")
                    name, _, tag = c["image"].partition(":")
                    if name != entry["name"]:
                        continue
                    name = entry.get("newName", name)
                    tag = str(entry.get("newTag", tag))
                    c["image"] = f"{name}:{tag}" if tag else name


def _accumulate(folder: Path, entries: list[str]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for entry in entries:
        if "://" in entry or entry.startswith("github.com/"):
            raise Unsupported(f"{folder}: remote resource {entry}")
        path = (folder / entry).resolve()
        docs += build(path) if path.is_dir() else _read_documents(path)
    return docs


def build(folder: str | Path) -> list[dict[str, Any]]:
    """Render the kustomization in ``folder``: the list of objects ``kustomize build`` prints."""
    folder = Path(folder).resolve()
    k = _load_kustomization(folder)
    if k["kind"] != "Kustomization":
        raise Unsupported(f"{folder}: a Component is used through `components`, not built alone")
    docs = _accumulate(folder, k.get("resources", []))
    for entry in k.get("components", []):
        component = (folder / entry).resolve()
        ck = _load_kustomization(component)
        if ck["kind"] != "Component":
            raise Unsupported(f"{component}: listed under components but kind {ck['kind']}")
        docs += _accumulate(component, ck.get("resources", []))
    generated, renames = _generate_config_maps(folder, k.get("configMapGenerator", []))
    docs += generated
    _rename_config_maps(docs, renames)
    if "namespace" in k:
        _set_namespace(docs, k["namespace"])
    _add_labels(docs, k.get("labels", []))
    _set_images(docs, k.get("images", []))
    return copy.deepcopy(docs)
