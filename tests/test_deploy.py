"""The deployment files agree with KubeRay and with the code.

``ray-cluster.yaml`` is validated against the ``openAPIV3Schema`` of KubeRay's CRDs (``shared/kuberay-crds``
beside the repository), which is what the API server applies on ``kubectl apply``; broken copies must fail
the same check. Then the manifest and ``Dockerfile.gpu`` are checked against what the code says: the Ray and
Python versions, the ``gpu`` extra, ``Settings`` fields, the Serve import path and port, and the job
entrypoints that ``docs/DEPLOY.md`` tells users to run. No Kubernetes, Docker or running Ray is needed.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from pydantic import BaseModel

import kinoray
from kinoray.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
def _crd_dir() -> Path:
    """KubeRay's CRDs: ``KINORAY_KUBERAY_CRDS`` if set, else ``shared/kuberay-crds`` beside the repository, else
    the workplace's ``/work/shared`` (where a clean clone elsewhere still finds them)."""
    candidates = [os.environ.get("KINORAY_KUBERAY_CRDS"), ROOT.parent / "shared" / "kuberay-crds",
                  Path("/work/shared/kuberay-crds")]
    return next((Path(c) for c in candidates if c and Path(c).is_dir()), ROOT.parent / "shared" / "kuberay-crds")


CRD_DIR = _crd_dir()
MANIFEST = ROOT / "ray-cluster.yaml"
DOCKERFILE = ROOT / "Dockerfile.gpu"
DEPLOY_DOC = ROOT / "docs" / "DEPLOY.md"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
IMAGE = f"ghcr.io/kinoray/kinoray:{kinoray.__version__}-gpu"
SERVE_IMPORT_PATH = "kinoray.serve.app:app"
HEAD_PORTS = {"gcs-server": 6379, "dashboard": 8265, "client": 10001, "serve": 8000}

Manifest = dict[str, Any]


# --- loading ---------------------------------------------------------------------------------------------

def _load_all(text: str) -> list[Manifest]:
    return [doc for doc in yaml.load_all(text, Loader=yaml.CSafeLoader) if doc is not None]


def _documents() -> list[Manifest]:
    return _load_all(MANIFEST.read_text())


def _document(kind: str, name: str | None = None) -> Manifest:
    (doc,) = [doc for doc in _documents() if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    return doc


def _without_ingest(cluster: Manifest) -> Manifest:
    """``cluster`` without its ``ingest`` worker group (the API cluster's only difference from the jobs one)."""
    trimmed = copy.deepcopy(cluster)
    trimmed["workerGroupSpecs"] = [g for g in trimmed["workerGroupSpecs"] if g["groupName"] != "ingest"]
    return trimmed


def _cluster_specs() -> list[tuple[str, Manifest]]:
    """The RayCluster's spec and the RayService's cluster: every check on one applies to both."""
    return [("RayCluster.spec", _document("RayCluster")["spec"]),
            ("RayService.spec.rayClusterConfig", _document("RayService")["spec"]["rayClusterConfig"])]


def _groups(cluster: Manifest) -> Iterator[tuple[str, Manifest]]:
    yield "head", cluster["headGroupSpec"]
    for group in cluster.get("workerGroupSpecs", []):
        yield group["groupName"], group


def _containers(cluster: Manifest) -> Iterator[tuple[str, Manifest]]:
    for group_name, group in _groups(cluster):
        for container in group["template"]["spec"]["containers"]:
            yield group_name, container


def _env(container: Manifest) -> dict[str, Manifest]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def _serve_config() -> Manifest:
    config: Manifest = yaml.safe_load(_document("RayService")["spec"]["serveConfigV2"])
    return config


# --- the CRD schemas -------------------------------------------------------------------------------------

def _closed(schema: Any) -> Any:
    """The schema with every object that lists its properties closed to others.

    CRD schemas leave ``additionalProperties`` out and let the API server prune unknown fields; ``kubectl
    apply`` (field validation ``Strict``, the default) rejects them instead, so a misspelt field such as
    ``enableInTreeAutoScaling`` is an error there, and must be one here."""
    if not isinstance(schema, dict):
        return schema
    closed = dict(schema)
    if "properties" in closed:
        closed["properties"] = {name: _closed(sub) for name, sub in closed["properties"].items()}
        if "additionalProperties" not in closed and not closed.get("x-kubernetes-preserve-unknown-fields"):
            closed["additionalProperties"] = False
    for key in ("items", "additionalProperties", "not"):
        if isinstance(closed.get(key), dict):
            closed[key] = _closed(closed[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in closed:
            closed[key] = [_closed(sub) for sub in closed[key]]
    return closed


@cache
def _crd_schemas() -> dict[tuple[str, str, str], Manifest]:
    """(group, version, kind) -> the served version's openAPIV3Schema, from every CRD in CRD_DIR."""
    if not CRD_DIR.is_dir():
        pytest.skip(f"KubeRay CRDs not found at {CRD_DIR} (shared/kuberay-crds beside the repository)")
    schemas = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for crd in _load_all(path.read_text()):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                if version.get("served"):
                    key = (spec["group"], version["name"], spec["names"]["kind"])
                    schemas[key] = _closed(version["schema"]["openAPIV3Schema"])
    return schemas


def _schema_errors(doc: Manifest) -> list[str]:
    group, _, version = doc["apiVersion"].partition("/")
    schema = _crd_schemas().get((group, version, doc["kind"]))
    assert schema is not None, f"no served CRD for {doc['apiVersion']} {doc['kind']} in {CRD_DIR}"
    # OpenAPI v3 schemas are a JSON Schema subset; draft 7 reads every keyword they use (the x-kubernetes-*
    # extensions and formats such as int32 are ignored, as the test intends).
    validator = jsonschema.Draft7Validator(schema)
    return [f"{error.json_path}: {error.message}" for error in validator.iter_errors(doc)]


# --- (a) the manifest against KubeRay's CRDs -------------------------------------------------------------

def test_manifest_is_the_ray_tiers_and_the_edge_tier() -> None:
    assert sorted((doc["apiVersion"], doc["kind"]) for doc in _documents()) == [
        ("apps/v1", "Deployment"), ("autoscaling/v2", "HorizontalPodAutoscaler"), ("ray.io/v1", "RayCluster"),
        ("ray.io/v1", "RayService"), ("v1", "Service"), ("v1", "Service"), ("v1", "Service")]
    # docs/DEPLOY.md applies one or the other with `kubectl apply -l app.kubernetes.io/component=...`
    assert _document("RayCluster")["metadata"]["labels"]["app.kubernetes.io/component"] == "jobs"
    assert _document("RayService")["metadata"]["labels"]["app.kubernetes.io/component"] == "api"


@pytest.mark.parametrize("kind", ["RayCluster", "RayService"])
def test_manifest_validates_against_kuberay_crd(kind: str) -> None:
    errors = _schema_errors(_document(kind))
    assert not errors, "\n".join(errors)


# --- (a') the edge tier against Kubernetes' own schemas ---------------------------------------------------

#: The Kubernetes version whose schemas (``kubernetes-validate``'s strict copies: unknown fields refused) the
#: edge tier's Deployment, Service and HorizontalPodAutoscaler are checked against.
KUBERNETES_VERSION = "1.34.0"
EDGE_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler")


def _kubernetes_errors(doc: Manifest) -> list[str]:
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{'.'.join(str(p) for p in error.path)}: {error.message}"]
    return []


@pytest.mark.parametrize("kind", EDGE_KINDS)
def test_edge_tier_validates_against_kubernetes_schemas(kind: str) -> None:
    errors = _kubernetes_errors(_document(kind, "kinoray-edge"))
    assert not errors, "\n".join(errors)


def _edge_container(doc: Manifest) -> Manifest:
    (container,) = doc["spec"]["template"]["spec"]["containers"]
    return container


@pytest.mark.parametrize(("kind", "field", "breakage"), [
    ("Deployment", "containerPort", lambda doc: _edge_container(doc)["ports"][0].update(containerPort="8080")),
    ("Deployment", "replica", lambda doc: doc["spec"].update(replica=2)),
    ("Deployment", "selector", lambda doc: doc["spec"].pop("selector")),
    ("HorizontalPodAutoscaler", "maxReplicas", lambda doc: doc["spec"].pop("maxReplicas")),
    ("Service", "port", lambda doc: doc["spec"]["ports"][0].update(port="eighty")),
], ids=["containerPort as a string", "misspelt replicas", "no selector", "no maxReplicas", "port as a word"])
def test_broken_edge_copies_fail_the_kubernetes_check(kind: str, field: str, breakage: Any) -> None:
    broken = copy.deepcopy(_document(kind, "kinoray-edge"))
    breakage(broken)
    errors = _kubernetes_errors(broken)
    assert errors and field in " ".join(errors), errors


def test_edge_tier_runs_the_edge_against_the_api_and_scales_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from kinoray.cli import build_parser
    from kinoray.edge.app import build_edge_api

    deployment, service, autoscaler = (_document(kind, "kinoray-edge") for kind in EDGE_KINDS)
    container = _edge_container(deployment)
    assert container["command"][:2] == ["kinoray", "edge"]
    build_parser().parse_args(container["command"][1:])  # the CLI takes it
    env = _env(container)
    names = [name for name in env if name.startswith("KINORAY_")]
    for name in names:
        assert _settings_field(name), f"edge: {name} is not a Settings field"
        monkeypatch.setenv(name, env[name].get("value", "value-from-a-kubernetes-secret"))
    settings = Settings()
    assert settings.environment == "production" and settings.storage.url == _env(
        _containers(_cluster_specs()[1][1]).__next__()[1])["KINORAY_STORAGE__URL"]["value"]  # the same storage
    # it forwards to the RayService's serve Service (KubeRay names it <name>-serve-svc) on Serve's port
    assert settings.edge.api_url == f"http://{_document('RayService')['metadata']['name']}-serve-svc:" \
                                    f"{_serve_config()['http_options']['port']}"
    (port,) = container["ports"]
    assert port["containerPort"] == settings.edge.port and service["spec"]["ports"][0]["targetPort"] == port["name"]
    paths = {route.path for route in build_edge_api().routes if hasattr(route, "path")}
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] in paths
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert autoscaler["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                    "name": deployment["metadata"]["name"]}
    assert autoscaler["spec"]["minReplicas"] >= 2  # an edge pod may go at any time: never a single one


def _worker(doc: Manifest, name: str) -> Manifest:
    (group,) = [group for group in doc["spec"]["workerGroupSpecs"] if group["groupName"] == name]
    return group


def _rename(mapping: Manifest, old: str, new: str) -> None:
    mapping[new] = mapping.pop(old)


#: name -> (kind, the field the schema error must name, how to break a copy)
BREAKAGES: dict[str, tuple[str, str, Callable[[Manifest], None]]] = {
    "replicas as a word": ("RayCluster", "replicas", lambda doc: _worker(doc, "gpu").update(replicas="two")),
    "worker group without groupName": (
        "RayCluster", "groupName", lambda doc: _worker(doc, "cpu").pop("groupName")),
    "no headGroupSpec": ("RayCluster", "headGroupSpec", lambda doc: doc["spec"].pop("headGroupSpec")),
    "misspelt enableInTreeAutoscaling": (
        "RayCluster", "enableInTreeAutoScaling",
        lambda doc: _rename(doc["spec"], "enableInTreeAutoscaling", "enableInTreeAutoScaling")),
    "containerPort as a string": (
        "RayCluster", "containerPort",
        lambda doc: doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"][0].update(
            containerPort="6379")),
    "unknown upscalingMode": (
        "RayCluster", "upscalingMode", lambda doc: doc["spec"]["autoscalerOptions"].update(upscalingMode="Fast")),
    "GPU limit that is not a quantity": (
        "RayCluster", "nvidia.com/gpu",
        lambda doc: _worker(doc, "gpu")["template"]["spec"]["containers"][0]["resources"]["limits"].update(
            {"nvidia.com/gpu": "one"})),
    "serveConfigV2 as a mapping": (
        "RayService", "serveConfigV2", lambda doc: doc["spec"].update(serveConfigV2=_serve_config())),
    "RayService without rayClusterConfig": (
        "RayService", "rayClusterConfig", lambda doc: doc["spec"].pop("rayClusterConfig")),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_broken_copies_fail_validation(breakage: str) -> None:
    kind, field, mutate = BREAKAGES[breakage]
    doc = copy.deepcopy(_document(kind))
    mutate(doc)
    errors = _schema_errors(doc)
    assert errors, f"a manifest with {breakage} passed the CRD schema"
    assert any(field in error for error in errors), errors


def test_rayservice_runs_the_same_cluster_as_the_raycluster() -> None:
    """The same cluster, but for the RTMP ingest group: the API cluster runs the runner, which starts the ingest."""
    (_, cluster), (_, service_cluster) = _cluster_specs()
    assert "ingest" not in dict(_groups(cluster)) and "ingest" in dict(_groups(service_cluster))
    assert _without_ingest(service_cluster) == cluster


def test_rtmp_reaches_the_one_ingest_actor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Publishers reach port 1935 of the ingest group's pod, and only there does the ingest actor fit: the group
    alone has the resource the settings (from the manifest's env) make the actor ask for."""
    import json

    from kinoray.settings import Settings

    service_cluster = _document("RayService")["spec"]["rayClusterConfig"]
    group = dict(_groups(service_cluster))["ingest"]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (1, 1, 1)
    offered = json.loads(json.loads(group["rayStartParams"]["resources"]))  # KubeRay's quoted JSON
    (container,) = group["template"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in container["env"] if "value" in item}
    monkeypatch.setenv("KINORAY_LIVE__INGEST_RESOURCES", env["KINORAY_LIVE__INGEST_RESOURCES"])
    asked = Settings().live.ingest_resources
    assert asked == offered == {"kinoray_ingest": 1}
    for name, other in _groups(service_cluster):  # no other group offers it: the actor cannot land elsewhere
        if name != "ingest":
            assert "kinoray_ingest" not in other["rayStartParams"].get("resources", ""), name
    rtmp = _document("Service", "kinoray-rtmp")
    assert not _kubernetes_errors(rtmp), _kubernetes_errors(rtmp)
    assert rtmp["spec"]["selector"].items() <= group["template"]["metadata"]["labels"].items()
    edge_pods = _document("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not rtmp["spec"]["selector"].items() <= edge_pods.items()  # the edge's pods are not publishers' target
    ports = {port["name"]: port for port in rtmp["spec"]["ports"]}
    assert set(ports) == {"rtmp", "rtmps"}
    for port in ports.values():
        (target,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
        assert port["port"] == target["containerPort"] and port["protocol"] == target["protocol"] == "TCP"
    assert ports["rtmp"]["port"] == Settings().live.rtmp_port == 1935
    assert ports["rtmps"]["port"] == Settings().live.rtmps_port == 1936


def test_rtmps_and_webrtc_reach_the_ingest_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    """RTMPS: the ingest pod mounts the certificate where the settings it runs with say it is. WHIP/WHEP: the edge
    forwards the signalling to a Service on the ingest pod's whip port, and the pod is on its node's network, the
    one way the UDP media aiortc sends on ephemeral ports can reach it (docs/DEPLOY.md)."""
    group = dict(_groups(_document("RayService")["spec"]["rayClusterConfig"]))["ingest"]
    pod = group["template"]["spec"]
    (container,) = pod["containers"]
    for name, entry in _env(container).items():
        if name.startswith("KINORAY_"):
            monkeypatch.setenv(name, entry.get("value", "value-from-a-kubernetes-secret"))
    settings = Settings()
    assert settings.edge.tls_cert is not None and settings.edge.tls_key is not None
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "tls"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert mount["readOnly"] and volume["secret"]["secretName"] == "kinoray-tls"
    # a Secret of type kubernetes.io/tls holds tls.crt and tls.key
    assert {settings.edge.tls_cert, settings.edge.tls_key} == {Path(mount["mountPath"]) / "tls.crt",
                                                              Path(mount["mountPath"]) / "tls.key"}
    for other, spec in _groups(_document("RayService")["spec"]["rayClusterConfig"]):
        if other != "ingest":  # the certificate stays on the one pod that serves RTMPS
            assert "tls" not in {v["name"] for v in spec["template"]["spec"].get("volumes", [])}, other

    whip = _document("Service", "kinoray-whip")
    assert not _kubernetes_errors(whip), _kubernetes_errors(whip)
    assert whip["spec"]["selector"].items() <= group["template"]["metadata"]["labels"].items()
    (port,) = whip["spec"]["ports"]
    (target,) = [p for p in container["ports"] if p["name"] == port["targetPort"]]
    assert port["port"] == target["containerPort"] == settings.live.whip_port == 8189
    edge_env = _env(_edge_container(_document("Deployment", "kinoray-edge")))
    assert edge_env["KINORAY_EDGE__WHIP_URL"]["value"] == f"http://{whip['metadata']['name']}:{port['port']}"
    # the pod's own addresses are the ICE candidates; it still resolves the cluster's names (the head, Redis)
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"


# --- (b) the manifest and the image against the code -----------------------------------------------------

def test_ray_version_is_the_installed_one() -> None:
    for where, cluster in _cluster_specs():
        assert cluster["rayVersion"] == ray.__version__, where
    pins = [Requirement(dep) for dep in PYPROJECT["project"]["dependencies"]]
    (ray_pin,) = [req for req in pins if req.name == "ray"]
    assert str(ray_pin.specifier) == f"=={ray.__version__}"


def _dockerfile_from() -> re.Match[str]:
    match = re.search(r"^FROM\s+rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>3\d+)-gpu\s*$",
                      DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "Dockerfile.gpu must start FROM rayproject/ray:{ray}-py3XX-gpu"
    return match


def test_image_ray_and_python_match_the_project() -> None:
    base = _dockerfile_from()
    assert base["ray"] == ray.__version__
    python = f"{base['py'][0]}.{base['py'][1:]}"
    assert SpecifierSet(PYPROJECT["project"]["requires-python"]).contains(f"{python}.0"), python
    # Ray needs the same Python minor on every node and on the client that submits jobs.
    assert python == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_image_installs_the_gpu_extra() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"pip install --no-cache-dir '\.\[gpu\]'", text)
    assert re.search(r"^ENV NVIDIA_DRIVER_CAPABILITIES=\S*video", text, re.MULTILINE)
    gpu = [Requirement(dep) for dep in PYPROJECT["project"]["optional-dependencies"]["gpu"]]
    assert any(req.name.lower() == "pynvvideocodec" and str(req.specifier).startswith("==") for req in gpu), gpu


def test_every_pod_runs_the_image_the_dockerfile_builds() -> None:
    assert PYPROJECT["project"]["version"] == kinoray.__version__
    assert f"-t {IMAGE} " in DOCKERFILE.read_text(), "the build command in Dockerfile.gpu names another tag"
    for where, cluster in _cluster_specs():
        for group, container in _containers(cluster):
            assert container["image"] == IMAGE, f"{where} {group}"


def _settings_field(env_name: str) -> bool:
    """Whether KINORAY_A__B names field b of the nested model in field a of Settings (case-insensitive)."""
    model: type[BaseModel] = Settings
    *sections, leaf = env_name.removeprefix("KINORAY_").lower().split("__")
    for section in sections:
        fields = {name.lower(): field for name, field in model.model_fields.items()}
        annotation = fields[section].annotation if section in fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return False
        model = annotation
    return leaf in {name.lower() for name in model.model_fields}


def test_settings_field_lookup_can_fail() -> None:
    assert _settings_field("KINORAY_STORAGE__WORK_URL")
    assert _settings_field("KINORAY_ENVIRONMENT")
    assert not _settings_field("KINORAY_STORAGE__WORK_ULR")
    assert not _settings_field("KINORAY_STORAGES__WORK_URL")
    assert not _settings_field("KINORAY_ENVIRONMENT__NAME")


def test_kinoray_env_vars_are_settings_fields_and_load(monkeypatch: pytest.MonkeyPatch) -> None:
    for where, cluster in _cluster_specs():
        for group, container in _containers(cluster):
            env = _env(container)
            names = [name for name in env if name.startswith("KINORAY_")]
            assert names, f"{where} {group} sets no KINORAY_* variable"
            for name in names:
                assert _settings_field(name), f"{where} {group}: {name} is not a Settings field"
            assert "secretKeyRef" in env["KINORAY_SECRET_KEY"].get("valueFrom", {}), "secret in plain text"
            for name in names:
                monkeypatch.setenv(name, env[name].get("value", "value-from-a-kubernetes-secret"))
            settings = Settings()  # the production check passes and every value parses
            assert settings.environment == "production"
            # chunk outputs must be somewhere every worker node reaches, not a node's local disk
            assert settings.storage.work_url and settings.storage.work_url.startswith("s3://")
            for name in names:
                monkeypatch.delenv(name)


def test_serve_config_deploys_the_serve_app() -> None:
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.model_validate(_serve_config())
    (application,) = config.applications
    assert application.import_path == SERVE_IMPORT_PATH
    assert application.route_prefix == "/"
    module_name, _, attribute = SERVE_IMPORT_PATH.partition(":")
    module = importlib.import_module(module_name)
    assert isinstance(getattr(module, attribute), ray.serve.Application)
    # Serve refuses a config that names a deployment the application does not have.
    from kinoray.serve.anomaly import AnomalyDetector
    from kinoray.serve.runner import JobRunner

    named = {deployment.name for deployment in application.deployments}
    assert named == {module.ApiIngress.name, JobRunner.name, AnomalyDetector.name}


def test_serve_port_is_the_settings_port_everywhere() -> None:
    port = Settings().serve.port
    assert _serve_config()["http_options"]["port"] == port
    for where, cluster in _cluster_specs():
        ((_, head),) = [item for item in _containers(cluster) if item[0] == "head"]
        ports = {entry["name"]: entry["containerPort"] for entry in head["ports"]}
        assert ports == HEAD_PORTS, where
        assert ports["serve"] == port, where


def test_head_schedules_nothing() -> None:
    for where, cluster in _cluster_specs():
        assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", where


def _gpu_limit(container: Manifest) -> Any:
    return container.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")


def test_one_gpu_group_with_video_capabilities_and_a_cpu_group() -> None:
    for where, cluster in _cluster_specs():
        gpu_groups = {group for group, container in _containers(cluster) if _gpu_limit(container) is not None}
        assert gpu_groups == {"gpu"}, where
        for group, container in _containers(cluster):
            if group == "gpu":
                assert str(_gpu_limit(container)) == "1", where
                capabilities = _env(container)["NVIDIA_DRIVER_CAPABILITIES"]["value"].split(",")
                assert "video" in capabilities, f"{where}: NVENC/NVDEC libraries would not be mounted"
        assert "cpu" in {group for group, _ in _groups(cluster)}, where


def test_autoscaling_bounds() -> None:
    for where, cluster in _cluster_specs():
        assert cluster["enableInTreeAutoscaling"] is True, where
        assert {"upscalingMode", "idleTimeoutSeconds"} <= set(cluster["autoscalerOptions"]), where
        for name, group in _groups(cluster):
            if name == "head":
                continue
            assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], f"{where} {name}"


def test_every_container_requests_and_limits_cpu_and_memory() -> None:
    for where, cluster in _cluster_specs():
        for group, container in _containers(cluster):
            resources = container["resources"]
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources[kind]), f"{where} {group} {kind}"


def _documented_job_modules() -> list[str]:
    return sorted(set(re.findall(r"python -m (kinoray(?:\.\w+)+)", DEPLOY_DOC.read_text())))


def test_docs_submit_the_transcode_and_batch_jobs() -> None:
    assert {"kinoray.jobs.transcode", "kinoray.jobs.batch"} <= set(_documented_job_modules())


@pytest.mark.parametrize("module", _documented_job_modules())
def test_documented_job_entrypoint_exists(module: str) -> None:
    assert importlib.util.find_spec(module) is not None, f"docs/DEPLOY.md runs `python -m {module}`"


# --- (c) the Serve app answers without Ray ---------------------------------------------------------------

@pytest.fixture(scope="module")
def client() -> Any:
    from fastapi.testclient import TestClient

    from kinoray.serve.app import api

    return TestClient(api)


def test_healthz(client: Any) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": kinoray.__version__}


def test_capabilities_lists_every_backend(client: Any) -> None:
    from kinoray.encoders import available_encoders

    response = client.get("/system/v1/capabilities")
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == kinoray.__version__
    encoders = {(entry["codec"], entry["name"]): entry for entry in body["encoders"]}
    assert {f"{codec}/{name}" for codec, name in encoders} == set(available_encoders())
    for entry in encoders.values():
        assert set(entry) == {"codec", "name", "hardware", "available", "reason"}
        assert isinstance(entry["available"], bool) and entry["reason"]
    # the CPU encoders ship in PyAV's wheel and must open anywhere; NVENC is listed whether or not it can
    for codec, name in [("h264", "libx264"), ("hevc", "libx265"), ("av1", "libsvtav1")]:
        assert encoders[(codec, name)]["available"] is True, encoders[(codec, name)]["reason"]
        assert encoders[(codec, name)]["hardware"] is False
    assert encoders[("h264", "nvenc")]["hardware"] is True
