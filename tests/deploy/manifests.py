"""Rendered Kubernetes manifests (deploy/kubernetes) as data, and the gateway's settings as
environment variable names, for tests/deploy/test_kubernetes.py."""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from novaza_gateway.config import Settings
from tests.conftest import need_tool

KUBERNETES_VERSION = "1.31"  # the oldest release we support; docs/deployment.md
ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
OVERLAYS = ("base", "overlays/dev", "overlays/production")
UNSET_ANNOTATION = "novaza.ai/unset-settings"
WORKLOADS = ("Deployment", "Job", "StatefulSet", "DaemonSet")

# Settings the manifests carry that other branches are adding to config.py right now. Each name
# here is allowed to be missing from Settings; delete it once config.py has it.
PENDING_SETTINGS: frozenset[str] = frozenset()  # settings of unmerged branches: none


@dataclass(frozen=True)
class Rendered:
    overlay: str
    docs: list[dict[str, Any]]
    stderr: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind: str, name_prefix: str) -> dict[str, Any]:
        found = [d for d in self.of_kind(kind) if d["metadata"]["name"].startswith(name_prefix)]
        assert len(found) == 1, f"{self.overlay}: {len(found)} {kind} named {name_prefix}*"
        return found[0]

    @property
    def gateway(self) -> dict[str, Any]:
        return self.one("Deployment", "novaza-gateway")

    @property
    def config(self) -> dict[str, str]:
        return dict(self.one("ConfigMap", "novaza-gateway").get("data") or {})

    @property
    def secret(self) -> dict[str, str]:
        data = self.one("Secret", "novaza-gateway").get("data") or {}
        return {k: base64.b64decode(v).decode() for k, v in data.items()}

    @property
    def unset(self) -> set[str]:
        annotations = self.one("ConfigMap", "novaza-gateway")["metadata"].get("annotations") or {}
        return set(annotations.get(UNSET_ANNOTATION, "").split())

    def pod_specs(self) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
        """(workload, pod spec) for every workload in the overlay."""
        for doc in self.docs:
            if doc["kind"] in WORKLOADS:
                yield doc, doc["spec"]["template"]["spec"]


def render(overlay: str) -> Rendered:
    kubectl = need_tool("kubectl")
    done = subprocess.run(
        [kubectl, "kustomize", str(ROOT / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, f"kubectl kustomize {overlay}:\n{done.stderr}"
    docs = [d for d in yaml.safe_load_all(done.stdout) if d]
    return Rendered(overlay, docs, done.stderr)


def settings_env_names(model: type[BaseModel] = Settings, prefix: str | None = None) -> set[str]:
    """The environment variable of every setting, as pydantic-settings reads them: the prefix
    plus the field's alias or name; a nested model's fields joined by the nested delimiter.
    (The grouped views in config.py, ``settings.ai`` and the like, are properties over flat
    fields, so they add no names.)"""
    config = Settings.model_config
    prefix = config.get("env_prefix", "") if prefix is None else prefix
    delimiter = config.get("env_nested_delimiter")
    names = set()
    for name, field in model.model_fields.items():
        alias = field.validation_alias if isinstance(field.validation_alias, str) else None
        env = f"{prefix}{alias or field.alias or name}".upper()
        annotation = field.annotation
        if delimiter and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= settings_env_names(annotation, env + delimiter)
        else:
            names.add(env)
    return names


def referenced_settings(overlay: Rendered) -> set[str]:
    """Every NOVAZA_* name the overlay mentions: ConfigMap and Secret keys, container env,
    the declared-unset list."""
    names = set(overlay.config) | set(overlay.secret) | overlay.unset
    for _, pod in overlay.pod_specs():
        for container in pod.get("initContainers", []) + pod["containers"]:
            names |= {env["name"] for env in container.get("env", [])}
    return {name for name in names if name.startswith("NOVAZA_")}


def env_of(overlay: Rendered) -> dict[str, str]:
    return {**overlay.config, **overlay.secret}
