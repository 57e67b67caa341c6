"""Shared helpers for the tests of ``k8s/``: render the trees, find objects, map mounted files."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from tests.support import kustomize

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
BASE = K8S / "base"
EDGE_EXPOSED = K8S / "overlays" / "edge-exposed"
DASHBOARD = K8S / "components" / "optuna-dashboard"
TEMPLATES = K8S / "secrets" / "templates.yaml"


def with_dashboard(folder: Path) -> list[dict[str, Any]]:
    """The edge-exposed overlay plus the optuna-dashboard component, as a user would add it."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "hpc2edge",
                "resources": [str(EDGE_EXPOSED)],
                "components": [str(DASHBOARD)],
            }
        )
    )
    return kustomize.build(folder)


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} objects"
    return matches[0]


def generated(docs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """The ConfigMap generated as ``name`` (its rendered name has a hash suffix)."""
    matches = [
        d
        for d in docs
        if d["kind"] == "ConfigMap" and d["metadata"]["name"].rsplit("-", 1)[0] == name
    ]
    assert len(matches) == 1, f"generated ConfigMap {name}: {len(matches)} objects"
    return matches[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["template"]["spec"]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def mounted_files(
    doc: dict[str, Any], container: str, docs: list[dict[str, Any]] | None = None
) -> dict[str, tuple[str, str, str]]:
    """Absolute path in ``container`` -> (``configMap``/``secret``, object name, key).

    Covers the volume shapes the manifests use: configMap, secret and projected volumes, each with
    explicit ``items`` or all keys (taken from the secret templates, or from the ConfigMaps in
    ``docs``). Volumes from volumeClaimTemplates and emptyDirs hold no such files.
    """
    pod = pod_spec(doc)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    config_maps = {
        d["metadata"]["name"]: set(d.get("data", {}))
        for d in docs or []
        if d["kind"] == "ConfigMap"
    }
    c = next(c for c in containers(pod) if c["name"] == container)
    out: dict[str, tuple[str, str, str]] = {}
    for mount in c.get("volumeMounts", []):
        volume = volumes.get(mount["name"], {})
        sources: list[tuple[str, dict[str, Any]]] = []
        if "configMap" in volume:
            sources.append(("configMap", volume["configMap"]))
        if "secret" in volume:
            ref = dict(volume["secret"])
            ref["name"] = ref.pop("secretName")
            sources.append(("secret", ref))
        for source in volume.get("projected", {}).get("sources", []):
            kind = "configMap" if "configMap" in source else "secret"
            sources.append((kind, source[kind]))
        for kind, ref in sources:
            items = ref.get("items")
            if items is None:
                known = template_keys() if kind == "secret" else config_maps
                keys = known.get(ref["name"], set())
                items = [{"key": k, "path": k} for k in sorted(keys)]
            for item in items:
                out[f"{mount['mountPath']}/{item['path']}"] = (kind, ref["name"], item["key"])
    return out


def templates() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(TEMPLATES.read_text()) if d]


def template_keys() -> dict[str, set[str]]:
    return {t["metadata"]["name"]: set(t["stringData"]) for t in templates()}


def decode_secrets(text: str) -> dict[str, dict[str, bytes]]:
    """Secret documents (YAML) -> name -> key -> decoded bytes."""
    out = {}
    for doc in yaml.safe_load_all(text):
        if doc:
            assert doc["kind"] == "Secret"
            out[doc["metadata"]["name"]] = {
                k: base64.b64decode(v, validate=True) for k, v in doc["data"].items()
            }
    return out
